//! The `http` executor: posts the task to an HTTP service.
