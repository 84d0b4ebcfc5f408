//! The `command` executor: runs a program per task.
