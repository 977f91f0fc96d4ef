//! Run-time device selection for burn.
//!
//! Burn 0.22 carries the backend in the [`Device`], not in a type parameter, so model code never
//! names a backend: it receives a `Device` and creates its tensors there. This crate turns the
//! user's `--device` string into such a device and says clearly when the build or the machine
//! lacks the one asked for.
//!
//! | `--device`  | backend                          | needs                          |
//! |-------------|----------------------------------|--------------------------------|
//! | `cpu`       | flex, burn's pure-Rust CPU backend | nothing (the default build)  |
//! | `tch-cpu`   | libtorch on the CPU              | the `tch` cargo feature        |
//! | `cuda[:N]`  | libtorch on CUDA GPU `N`         | the `tch` feature and a GPU    |
//!
//! ```
//! use wm_backend::DeviceSpec;
//! let spec: DeviceSpec = "cpu".parse().unwrap();
//! let device = spec.init().unwrap();          // burn::tensor::Device on flex
//! let training_device = device.autodiff();    // the learner's device, with gradients
//! # let _ = training_device;
//! assert_eq!(spec.to_string(), "cpu");
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

pub use burn::tensor::Device;

/// Errors from parsing or initialising a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The `--device` string names no known device.
    #[error("unknown device `{given}`: expected one of `cpu`, `tch-cpu`, `cuda`, `cuda:N`")]
    UnknownDevice {
        /// The string as given.
        given: String,
    },
    /// The device needs a cargo feature that this binary was built without.
    #[error(
        "device `{device}` needs the `{feature}` cargo feature, which this build lacks \
         (see the README's GPU section: scripts/setup-libtorch.sh, then build with --features {feature})"
    )]
    FeatureMissing {
        /// The device asked for.
        device: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// An environment variable meant to name a device is not valid Unicode.
    #[error("environment variable `{var}` is not valid Unicode")]
    EnvNotUnicode {
        /// The variable.
        var: String,
    },
    /// The device was built in but the machine does not have it.
    #[error("device `{device}` is not available on this machine: {reason}")]
    Unavailable {
        /// The device asked for.
        device: String,
        /// Why, in words.
        reason: String,
    },
}

/// A device as named on the command line or in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum DeviceSpec {
    /// burn's embedded pure-Rust CPU backend (`flex`), the default.
    #[default]
    Cpu,
    /// libtorch on the CPU (`tch` feature).
    TchCpu,
    /// libtorch on the CUDA GPU with this index (`tch` feature).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = BackendError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let unknown = || BackendError::UnknownDevice {
            given: given.to_string(),
        };
        match given.trim() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "tch-cpu" => Ok(Self::TchCpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => {
                let index = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                index
                    .parse::<usize>()
                    .map(Self::Cuda)
                    .map_err(|_| unknown())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::TchCpu => write!(f, "tch-cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl DeviceSpec {
    /// Whether tensors on this device live in host memory (so copying them to a rollout worker
    /// costs no transfer).
    pub fn is_host(&self) -> bool {
        !matches!(self, Self::Cuda(_))
    }

    /// The burn device for this spec, without autodiff. Call `.autodiff()` on it for training.
    ///
    /// # Errors
    /// [`BackendError::FeatureMissing`] when the binary was built without the backend,
    /// [`BackendError::Unavailable`] when the machine lacks it (no CUDA GPU with that index).
    pub fn init(&self) -> Result<Device, BackendError> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::TchCpu | Self::Cuda(_) => self.init_libtorch(),
        }
    }

    #[cfg(not(feature = "tch"))]
    fn init_libtorch(&self) -> Result<Device, BackendError> {
        Err(BackendError::FeatureMissing {
            device: self.to_string(),
            feature: "tch",
        })
    }

    #[cfg(feature = "tch")]
    #[allow(deprecated)] // burn-tch is deprecated upstream; it is still our only offline GPU path.
    fn init_libtorch(&self) -> Result<Device, BackendError> {
        match *self {
            Self::TchCpu => Ok(Device::libtorch()),
            Self::Cuda(index) => {
                let available = tch_cuda_device_count();
                if index >= available {
                    return Err(BackendError::Unavailable {
                        device: self.to_string(),
                        reason: format!("libtorch sees {available} CUDA device(s)"),
                    });
                }
                Ok(Device::libtorch_cuda(index))
            }
            Self::Cpu => unreachable!("cpu is handled by init"),
        }
    }
}

#[cfg(feature = "tch")]
fn tch_cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

impl DeviceSpec {
    /// The device named by the environment variable `var`; `None` when it is unset or empty.
    ///
    /// # Errors
    /// [`BackendError::UnknownDevice`] when the value names no device, and
    /// [`BackendError::EnvNotUnicode`] when it is not valid Unicode.
    pub fn from_env(var: &str) -> Result<Option<Self>, BackendError> {
        match std::env::var(var) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => value.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(BackendError::EnvNotUnicode {
                var: var.to_string(),
            }),
        }
    }
}

/// The environment variable that picks the device of the model tests ([`test_device`]).
pub const TEST_DEVICE_VAR: &str = "WM_TEST_DEVICE";

/// The device spec the model tests run on: `cpu` (flex) unless [`TEST_DEVICE_VAR`]
/// (`WM_TEST_DEVICE`) names another, e.g. `WM_TEST_DEVICE=tch-cpu cargo test --features tch`.
///
/// # Panics
/// When the variable names no device, or a device this build or machine lacks (a test run that
/// asked for libtorch must not silently fall back to flex).
pub fn test_device_spec() -> DeviceSpec {
    let spec = DeviceSpec::from_env(TEST_DEVICE_VAR)
        .unwrap_or_else(|error| panic!("{TEST_DEVICE_VAR}: {error}"));
    let spec = spec.unwrap_or_default();
    if let Err(error) = spec.init() {
        panic!("{TEST_DEVICE_VAR}={spec}: {error}");
    }
    spec
}

/// The plain (non-autodiff) device the model tests run on; see [`test_device_spec`].
///
/// With libtorch, run the tests with `OMP_NUM_THREADS=1` (as `scripts/test.sh` does): the test
/// harness already runs tests in parallel, and libtorch's OpenMP threads on top of that spin
/// against each other (the wm-models tests took 77 s instead of 14 s on 2 cores; an RSSM
/// training test 490 s instead of 2 s on a loaded machine). `OMP_NUM_THREADS` is read when
/// libtorch loads, so it cannot be set from the test itself.
///
/// # Panics
/// As [`test_device_spec`].
pub fn test_device() -> Device {
    let spec = test_device_spec();
    spec.init()
        .unwrap_or_else(|error| panic!("{TEST_DEVICE_VAR}={spec}: {error}"))
}

impl DeviceSpec {
    /// Threads one operation of this device uses on the CPU: libtorch's intra-op threads
    /// (`OMP_NUM_THREADS`, else the physical cores), or flex's (`RAYON_NUM_THREADS`, else every
    /// core); `None` for a GPU. For benchmark reports.
    pub fn cpu_threads(&self) -> Option<usize> {
        match self {
            Self::Cpu => Some(
                std::env::var("RAYON_NUM_THREADS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            ),
            Self::TchCpu => self.libtorch_threads(),
            Self::Cuda(_) => None,
        }
    }

    #[cfg(feature = "tch")]
    fn libtorch_threads(&self) -> Option<usize> {
        usize::try_from(tch::get_num_threads()).ok()
    }

    #[cfg(not(feature = "tch"))]
    fn libtorch_threads(&self) -> Option<usize> {
        None
    }
}

/// The devices this build can create, for `--help` texts and error messages.
pub fn compiled_devices() -> &'static [&'static str] {
    if cfg!(feature = "tch") {
        &["cpu", "tch-cpu", "cuda[:N]"]
    } else {
        &["cpu"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_spelling() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("tch-cpu".parse(), Ok(DeviceSpec::TchCpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
    }

    #[test]
    fn unknown_device_is_an_error_naming_it() {
        let error = "gpu".parse::<DeviceSpec>().unwrap_err();
        assert_eq!(
            error,
            BackendError::UnknownDevice {
                given: "gpu".into()
            }
        );
        assert!(error.to_string().contains("`gpu`"), "{error}");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn display_round_trips_through_parse() {
        for spec in [DeviceSpec::Cpu, DeviceSpec::TchCpu, DeviceSpec::Cuda(2)] {
            assert_eq!(spec.to_string().parse(), Ok(spec));
        }
    }

    #[test]
    fn cpu_device_creates_tensors_and_gradients() {
        use burn::tensor::Tensor;
        let device = DeviceSpec::Cpu
            .init()
            .expect("flex is always built in")
            .autodiff();
        let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device).require_grad();
        let y = (x.clone() * x.clone()).sum();
        let grads = y.backward();
        let dx = x.grad(&grads).expect("x requires grad");
        let values: Vec<f32> = dx.into_data().try_to_vec::<f32>().expect("f32 data");
        assert_eq!(values, vec![2.0, 4.0, 6.0]);
    }

    #[test]
    fn from_env_reads_a_device_and_treats_unset_or_empty_as_none() {
        // Variables private to this test, so parallel tests do not race on them.
        let var = "WM_BACKEND_TEST_FROM_ENV";
        // SAFETY: no other thread reads or writes this variable.
        unsafe { std::env::set_var(var, "tch-cpu") };
        assert_eq!(DeviceSpec::from_env(var), Ok(Some(DeviceSpec::TchCpu)));
        unsafe { std::env::set_var(var, " ") };
        assert_eq!(DeviceSpec::from_env(var), Ok(None));
        unsafe { std::env::set_var(var, "gpu0") };
        assert_eq!(
            DeviceSpec::from_env(var),
            Err(BackendError::UnknownDevice {
                given: "gpu0".into()
            })
        );
        unsafe { std::env::remove_var(var) };
        assert_eq!(DeviceSpec::from_env(var), Ok(None));
    }

    #[test]
    fn test_device_follows_wm_test_device() {
        let expected = DeviceSpec::from_env(TEST_DEVICE_VAR)
            .expect("a valid WM_TEST_DEVICE")
            .unwrap_or_default();
        assert_eq!(test_device_spec(), expected);
        let device = test_device();
        let x = burn::tensor::Tensor::<1>::from_floats([1.5, -2.0], &device);
        assert_eq!(x.sum().into_scalar::<f32>(), -0.5);
    }

    #[cfg(feature = "tch")]
    #[test]
    fn libtorch_cpu_creates_tensors_and_gradients_and_moves_them_to_flex() {
        use burn::tensor::Tensor;
        let device = DeviceSpec::TchCpu
            .init()
            .expect("the tch feature is built in")
            .autodiff();
        let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device).require_grad();
        let grads = (x.clone() * x.clone()).sum().backward();
        let dx = x.grad(&grads).expect("x requires grad");
        let on_flex = dx.to_device(&Device::flex());
        let values: Vec<f32> = on_flex.into_data().try_to_vec::<f32>().expect("f32 data");
        assert_eq!(values, vec![2.0, 4.0, 6.0]);
    }

    #[cfg(feature = "tch")]
    #[test]
    fn cuda_beyond_the_visible_devices_is_unavailable() {
        let error = DeviceSpec::Cuda(4096).init().unwrap_err();
        assert!(matches!(error, BackendError::Unavailable { .. }), "{error}");
        assert!(error.to_string().contains("cuda:4096"), "{error}");
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn libtorch_devices_need_the_tch_feature() {
        let error = DeviceSpec::Cuda(0).init().unwrap_err();
        assert!(
            matches!(error, BackendError::FeatureMissing { feature: "tch", .. }),
            "{error}"
        );
    }
}
