//! NVIDIA GPUs through NVML (the `nvml` feature): utilisation, memory, temperature and power
//! per device. NVML is loaded once, when the collector is made; when that fails (no library,
//! no driver, no GPU) it is tried again at most once a minute. Without the feature, or without
//! a GPU, the snapshot's `gpus` is `None`.

use super::push;
use crate::metric::Sample;

#[cfg(feature = "nvml")]
mod nvml;
#[cfg(feature = "nvml")]
pub(crate) use nvml::GpuReader;

/// One GPU. Each reading NVML refuses for this device (old boards lack some) is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gpu {
    /// NVML's device index.
    pub index: u32,
    /// The product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// The device's UUID (`GPU-...`), stable across reboots and index changes.
    pub uuid: Option<String>,
    /// Share of the last sample period a kernel was running (0..1).
    pub utilization: Option<f64>,
    /// Device memory allocated, in bytes.
    pub memory_used_bytes: Option<u64>,
    /// Device memory installed, in bytes.
    pub memory_total_bytes: Option<u64>,
    /// Core temperature in degrees Celsius.
    pub temperature_celsius: Option<f64>,
    /// Power draw in watts.
    pub power_watts: Option<f64>,
}

impl Gpu {
    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        let index = self.index.to_string();
        let labels = [("gpu", index.as_str()), ("name", self.name.as_str())];
        let f = |v: Option<u64>| v.map(|v| v as f64);
        push(out, &UTILIZATION, &labels, self.utilization);
        push(out, &MEMORY_USED, &labels, f(self.memory_used_bytes));
        push(out, &MEMORY_TOTAL, &labels, f(self.memory_total_bytes));
        push(out, &TEMPERATURE, &labels, self.temperature_celsius);
        push(out, &POWER, &labels, self.power_watts);
    }
}

/// Without the `nvml` feature: never any GPU.
#[cfg(not(feature = "nvml"))]
#[derive(Debug)]
pub(crate) struct GpuReader;

#[cfg(not(feature = "nvml"))]
impl GpuReader {
    pub(crate) fn new(_enabled: bool) -> Self {
        GpuReader
    }

    pub(crate) fn read(&mut self, _now: std::time::Instant) -> Option<Vec<Gpu>> {
        None
    }
}

descs! {
    UTILIZATION Gauge "qm_host_gpu_utilization_ratio"
        "Share of the last sample period a kernel ran on the GPU.";
    MEMORY_USED Gauge "qm_host_gpu_memory_used_bytes"
        "GPU memory allocated.";
    MEMORY_TOTAL Gauge "qm_host_gpu_memory_total_bytes"
        "GPU memory installed.";
    TEMPERATURE Gauge "qm_host_gpu_temperature_celsius"
        "GPU core temperature.";
    POWER Gauge "qm_host_gpu_power_watts"
        "GPU power draw.";
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn samples_carry_index_and_name() {
        let gpu = Gpu {
            index: 1,
            name: "NVIDIA H100".to_owned(),
            utilization: Some(0.5),
            power_watts: Some(300.0),
            ..Gpu::default()
        };
        let mut out = Vec::new();
        gpu.samples(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].desc.name, "qm_host_gpu_utilization_ratio");
        assert_eq!(
            out[0].labels,
            [("gpu", "1".to_owned()), ("name", "NVIDIA H100".to_owned())]
        );
    }

    #[test]
    fn no_gpu_here_gives_none() {
        // no NVIDIA driver on the machines the tests run on; where there is one, Some
        let mut reader = GpuReader::new(false);
        assert_eq!(reader.read(Instant::now()), None, "disabled");
    }
}
