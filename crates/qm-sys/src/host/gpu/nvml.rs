//! The NVML reader: one `Nvml` handle for the collector's life, devices read each collection.

use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

use super::Gpu;

/// How long to wait before loading NVML again after it failed.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// NVML, once loaded.
#[derive(Debug)]
pub(crate) struct GpuReader {
    enabled: bool,
    nvml: Option<Nvml>,
    /// When to try loading NVML again; `None` until the first collection after a failure.
    retry_at: Option<Instant>,
}

impl GpuReader {
    /// Loads NVML now when `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        GpuReader {
            enabled,
            nvml: if enabled { Nvml::init().ok() } else { None },
            retry_at: None,
        }
    }

    /// Every GPU; `None` when NVML is not loaded or sees no device.
    pub(crate) fn read(&mut self, now: Instant) -> Option<Vec<Gpu>> {
        if !self.enabled {
            return None;
        }
        if self.nvml.is_none() {
            match self.retry_at {
                Some(at) if now >= at => {
                    self.nvml = Nvml::init().ok();
                    self.retry_at = Some(now + RETRY_AFTER);
                }
                Some(_) => {}
                None => self.retry_at = Some(now + RETRY_AFTER),
            }
        }
        let nvml = self.nvml.as_ref()?;
        let count = nvml.device_count().ok()?;
        let gpus: Vec<Gpu> = (0..count)
            .filter_map(|index| {
                let device = nvml.device_by_index(index).ok()?;
                let memory = device.memory_info().ok();
                Some(Gpu {
                    index,
                    name: device.name().unwrap_or_default(),
                    uuid: device.uuid().ok(),
                    utilization: device
                        .utilization_rates()
                        .ok()
                        .map(|u| f64::from(u.gpu) / 100.0),
                    memory_used_bytes: memory.as_ref().map(|m| m.used),
                    memory_total_bytes: memory.as_ref().map(|m| m.total),
                    temperature_celsius: device
                        .temperature(TemperatureSensor::Gpu)
                        .ok()
                        .map(f64::from),
                    power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                })
            })
            .collect();
        (!gpus.is_empty()).then_some(gpus)
    }
}
