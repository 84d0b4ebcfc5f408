//! The machine a node runs on, read once at start: CPUs, memory, NVIDIA
//! GPUs (where `nvidia-smi` answers) and the device-tree model (Jetson
//! boards name themselves there).

use std::time::Duration;

use sage_types::capabilities::{Gpu, Hardware};

/// Reads the machine. Never fails: what cannot be read is left out.
pub async fn detect() -> Hardware {
    Hardware {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: read("/proc/cpuinfo").and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        }),
        memory_bytes: read("/proc/meminfo").and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        }),
        gpus: nvidia_gpus().await,
        device_model: read("/proc/device-tree/model")
            .map(|m| m.trim_end_matches('\0').trim().to_owned()),
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `nvidia-smi --query-gpu=name,driver_version,memory.total`, if it answers
/// within 3 seconds.
async fn nvidia_gpus() -> Vec<Gpu> {
    let run = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .kill_on_drop(true)
        .output();
    let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(3), run).await else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split(',').map(str::trim);
            Gpu {
                name: fields.next().unwrap_or_default().to_owned(),
                driver: fields.next().filter(|s| !s.is_empty()).map(str::to_owned),
                memory_mib: fields.next().and_then(|s| s.parse().ok()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines_are_read() {
        let gpus = parse_nvidia_smi(
            "NVIDIA GeForce RTX 4090, 550.54.14, 24564\nNVIDIA Thor, 580.00, [N/A]\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA GeForce RTX 4090");
        assert_eq!(gpus[0].driver.as_deref(), Some("550.54.14"));
        assert_eq!(gpus[0].memory_mib, Some(24564));
        assert_eq!(gpus[1].memory_mib, None);
    }

    #[tokio::test]
    async fn this_machine_is_described() {
        let hw = detect().await;
        assert!(hw.cpus >= 1);
        assert!(hw.memory_bytes.unwrap_or(0) > 0);
    }
}
