//! Windows: the sidecar as a Windows service, through the `windows-service` crate.
//!
//! `install` registers `agentcom-sidecar[-NAME]` with the Service Control Manager (automatic
//! start, LocalSystem unless changed in services.msc) running
//! `agentcom-sidecar.exe run --config PATH --windows-service`, sets failure actions (restart after
//! 2 s, 10 s, 60 s) and starts it. With `--windows-service`, `run` hands the process to the
//! service dispatcher (`run_as_service`, built on Windows only); the service's Stop and Shutdown
//! controls resolve the same stop future Ctrl+C does, so the link closes with 1000 as on any stop.
//!
//! Restart semantics: failure actions apply only when the process ends without reporting
//! `SERVICE_STOPPED` (a crash). A config error is reported as a stopped service with
//! service-specific exit code 78 and is not restarted, like systemd's `RestartPreventExitStatus=78`.
//!
//! Only [`sc_commands`] is built on every platform; the rest is `cfg(windows)` and has been
//! compile-checked (`cargo check --target x86_64-pc-windows-gnu`), never run.

use super::ServiceSpec;

/// The service's name: `agentcom-sidecar[-NAME]`.
pub fn service_name(spec: &ServiceSpec) -> String {
    spec.base_name()
}

/// One argument quoted for a Windows command line (the CommandLineToArgvW rules): wrapped in
/// `"` when it holds a space, tab or quote; backslashes before a `"` (or the closing one) doubled.
pub fn windows_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// The service's command line: the binary, `run --config PATH --windows-service`.
pub fn command_line(spec: &ServiceSpec) -> String {
    std::iter::once(spec.binary.clone())
        .chain(spec.run_args())
        .chain(std::iter::once("--windows-service".to_owned()))
        .map(|a| windows_arg(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The service's registry key under `HKEY_LOCAL_MACHINE`, where its `Environment` value lives.
pub fn registry_key(spec: &ServiceSpec) -> String {
    format!(r"SYSTEM\CurrentControlSet\Services\{}", service_name(spec))
}

/// The service's environment as the SCM reads it: a `REG_MULTI_SZ` of `NAME=value` strings
/// (each ends with a NUL, the list with another).
pub fn environment_multi_sz(spec: &ServiceSpec) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    for (name, value) in &spec.environment {
        out.extend(format!("{name}={value}").encode_utf16());
        out.push(0);
    }
    out.push(0);
    out
}

/// What `install` does, as sc.exe commands (for `service print` and for review).
pub fn sc_commands(spec: &ServiceSpec) -> String {
    let name = service_name(spec);
    // sc.exe takes binPath= as one argument: the command line inside quotes, its quotes escaped.
    let bin_path = command_line(spec).replace('"', "\\\"");
    let environment = if spec.environment.is_empty() {
        String::new()
    } else {
        let list = spec
            .environment
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(r"\0");
        format!(
            "REM The proxy settings of the shell that ran `service install`, as the service's environment.\r\n\
             reg.exe add \"HKLM\\{key}\" /v Environment /t REG_MULTI_SZ /d \"{list}\" /f\r\n",
            key = registry_key(spec)
        )
    };
    format!(
        "REM {name}: the AgentCom sidecar as a Windows service (run in an Administrator prompt).\r\n\
         REM `agentcom-sidecar service install` does the same through the Service Control Manager.\r\n\
         sc.exe create {name} binPath= \"{bin_path}\" start= auto DisplayName= \"AgentCom sidecar{suffix}\"\r\n\
         sc.exe description {name} \"Keeps an AI coding agent connected to an AgentCom hub.\"\r\n\
         REM Restart after a crash (2 s, 10 s, 60 s); a config error (exit 78) stops it for good.\r\n\
         sc.exe failure {name} reset= 86400 actions= restart/2000/restart/10000/restart/60000\r\n\
         {environment}\
         sc.exe start {name}\r\n",
        suffix = spec.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
    )
}

/// Register the service, set its failure actions, start it.
#[cfg(windows)]
pub fn install(spec: &ServiceSpec) -> Result<(), String> {
    imp::install(spec)
}

/// Stop the service and delete its registration.
#[cfg(windows)]
pub fn uninstall(spec: &ServiceSpec) -> Result<(), String> {
    imp::uninstall(spec)
}

/// Not on Windows: installing a Windows service is impossible here.
#[cfg(not(windows))]
pub fn install(_spec: &ServiceSpec) -> Result<(), String> {
    Err("installing a Windows service works only on Windows (try `service print --platform windows`)".into())
}

/// Not on Windows: there is no Windows service to remove here.
#[cfg(not(windows))]
pub fn uninstall(_spec: &ServiceSpec) -> Result<(), String> {
    Err("removing a Windows service works only on Windows".into())
}

#[cfg(windows)]
pub use imp::run_as_service;

#[cfg(windows)]
mod imp {
    use super::{command_line, service_name, ServiceSpec};
    use crate::service::StopFuture;
    use std::ffi::OsString;
    use std::sync::Mutex;
    use std::time::Duration;
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo,
        ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    /// What the service runs: the normal `run`, given the service's stop future; returns the exit code.
    type Body = Box<dyn FnOnce(StopFuture) -> u8 + Send>;

    static BODY: Mutex<Option<Body>> = Mutex::new(None);

    /// `what` failed: with the Windows error itself (the crate's own text for a failed call is
    /// only "IO error in winapi call").
    fn err(what: &str, e: windows_service::Error) -> String {
        match std::error::Error::source(&e) {
            Some(cause) => format!("{what}: {cause} (run from an Administrator prompt)"),
            None => format!("{what}: {e} (run from an Administrator prompt)"),
        }
    }

    pub(super) fn install(spec: &ServiceSpec) -> Result<(), String> {
        let name = service_name(spec);
        let manager = ServiceManager::local_computer(
            None::<&str>,
            ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        )
        .map_err(|e| err("cannot open the Service Control Manager", e))?;
        let mut launch_arguments: Vec<OsString> = spec.run_args().into_iter().map(OsString::from).collect();
        launch_arguments.push("--windows-service".into());
        let info = ServiceInfo {
            name: OsString::from(&name),
            display_name: OsString::from(match &spec.name {
                Some(n) => format!("AgentCom sidecar ({n})"),
                None => "AgentCom sidecar".to_owned(),
            }),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: spec.binary.clone().into(),
            launch_arguments,
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        crate::outln!("registering service {name}: {}", command_line(spec));
        let service = manager
            .create_service(
                &info,
                ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS,
            )
            .map_err(|e| err("cannot create the service", e))?;
        let _ = service.set_description("Keeps an AI coding agent connected to an AgentCom hub.");
        let restart = |secs| ServiceAction {
            action_type: ServiceActionType::Restart,
            delay: Duration::from_secs(secs),
        };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86400)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(2), restart(10), restart(60)]),
            })
            .map_err(|e| err("cannot set the failure actions", e))?;
        if !spec.environment.is_empty() {
            set_environment(spec)?;
            if let Some(note) = spec.environment_note() {
                crate::outln!("  {note}");
            }
        }
        crate::outln!("  ok; starting it");
        service
            .start::<&str>(&[])
            .map_err(|e| err("the service is registered but did not start", e))?;
        crate::outln!("\n{name} is installed and running. Next:\n  sc.exe query {name}\n  services.msc (Log On tab: run it as your user account so the agent sees your files)");
        Ok(())
    }

    /// `HKEY_LOCAL_MACHINE`, a predefined handle (sign-extended, as the Windows headers define it).
    const HKEY_LOCAL_MACHINE: isize = -2147483646;
    /// A list of NUL-terminated strings ending with an empty one.
    const REG_MULTI_SZ: u32 = 7;

    // One call, declared by hand rather than pulling in windows-sys (as resources.rs does).
    #[link(name = "advapi32")]
    extern "system" {
        fn RegSetKeyValueW(
            key: isize,
            sub_key: *const u16,
            value_name: *const u16,
            kind: u32,
            data: *const std::ffi::c_void,
            data_len: u32,
        ) -> u32;
    }

    /// Write the service's `Environment` value (the proxy settings) into its registry key.
    fn set_environment(spec: &ServiceSpec) -> Result<(), String> {
        let wide = |s: &str| s.encode_utf16().chain(std::iter::once(0)).collect::<Vec<u16>>();
        let key = wide(&super::registry_key(spec));
        let value = wide("Environment");
        let data = super::environment_multi_sz(spec);
        let bytes =
            u32::try_from(data.len() * 2).map_err(|_| "the proxy settings are too long".to_owned())?;
        // SAFETY: every pointer is to a live, NUL-terminated UTF-16 buffer of the stated size.
        let status = unsafe {
            RegSetKeyValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                REG_MULTI_SZ,
                data.as_ptr().cast(),
                bytes,
            )
        };
        if status != 0 {
            return Err(format!(
                "cannot set the service's environment (the proxy settings) in HKLM\\{}: {} (run from an Administrator prompt)",
                super::registry_key(spec),
                std::io::Error::from_raw_os_error(status as i32)
            ));
        }
        Ok(())
    }

    pub(super) fn uninstall(spec: &ServiceSpec) -> Result<(), String> {
        let name = service_name(spec);
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .map_err(|e| err("cannot open the Service Control Manager", e))?;
        let service = manager
            .open_service(
                &name,
                ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
            )
            .map_err(|e| err("cannot open the service", e))?;
        if let Ok(status) = service.query_status() {
            if status.current_state != ServiceState::Stopped {
                crate::outln!("stopping {name}");
                let _ = service.stop();
            }
        }
        service
            .delete()
            .map_err(|e| err("cannot delete the service", e))?;
        crate::outln!("{name} is uninstalled (removed once it has stopped).");
        Ok(())
    }

    define_windows_service!(ffi_service_main, service_main);

    /// Hand this process to the service dispatcher; `body` runs on the service's thread with a
    /// future that resolves when the service is asked to stop. Blocks until the service stops.
    pub fn run_as_service(body: Box<dyn FnOnce(StopFuture) -> u8 + Send>) -> Result<(), String> {
        *BODY.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        // The name is ignored for a SERVICE_WIN32_OWN_PROCESS service.
        service_dispatcher::start("agentcom-sidecar", ffi_service_main).map_err(|e| {
            format!("cannot start as a Windows service: {e} (--windows-service is for the Service Control Manager only)")
        })
    }

    fn status(
        state: ServiceState,
        accept: ServiceControlAccept,
        exit_code: ServiceExitCode,
    ) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        }
    }

    fn service_main(arguments: Vec<OsString>) {
        let name = arguments
            .first()
            .cloned()
            .unwrap_or_else(|| OsString::from("agentcom-sidecar"));
        let Some(body) = BODY.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
        let tx = Mutex::new(Some(tx));
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                let why = if control == ServiceControl::Stop {
                    "service stop"
                } else {
                    "system shutdown"
                };
                if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(why);
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(handle) = service_control_handler::register(&name, handler) else {
            return;
        };
        let _ = handle.set_service_status(status(
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            ServiceExitCode::Win32(0),
        ));
        let stop: StopFuture = Box::pin(async move { rx.await.unwrap_or("service stop").to_owned() });
        let code = body(stop);
        let exit_code = if code == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(u32::from(code))
        };
        let _ = handle.set_service_status(status(
            ServiceState::Stopped,
            ServiceControlAccept::empty(),
            exit_code,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Scope;

    #[test]
    fn windows_quoting() {
        assert_eq!(windows_arg("run"), "run");
        assert_eq!(
            windows_arg(r"C:\Program Files\a.exe"),
            r#""C:\Program Files\a.exe""#
        );
        assert_eq!(windows_arg(r"C:\my dir\"), r#""C:\my dir\\""#);
        assert_eq!(windows_arg(r#"a"b"#), r#""a\"b""#);
        assert_eq!(windows_arg(""), r#""""#);
    }

    #[test]
    fn sc_text() {
        let spec = ServiceSpec {
            name: None,
            binary: r"C:\Program Files\agentcom\agentcom-sidecar.exe".into(),
            config: r"C:\Users\a b\agent\config.json".into(),
            scope: Scope::System,
            run_as: None,
            home: r"C:\Users\a b".into(),
            environment: vec![],
        };
        let text = sc_commands(&spec);
        assert!(text.contains(
            r#"sc.exe create agentcom-sidecar binPath= "\"C:\Program Files\agentcom\agentcom-sidecar.exe\" run --config \"C:\Users\a b\agent\config.json\" --windows-service" start= auto"#
        ), "{text}");
        assert!(text.contains(
            "sc.exe failure agentcom-sidecar reset= 86400 actions= restart/2000/restart/10000/restart/60000"
        ));
        assert!(!text.contains("Environment"), "{text}");
        let spec = ServiceSpec {
            environment: vec![
                ("HTTPS_PROXY".into(), "http://proxy:3128".into()),
                ("NO_PROXY".into(), "localhost".into()),
            ],
            ..spec
        };
        let text = sc_commands(&spec);
        assert!(
            text.contains(
                r#"reg.exe add "HKLM\SYSTEM\CurrentControlSet\Services\agentcom-sidecar" /v Environment /t REG_MULTI_SZ /d "HTTPS_PROXY=http://proxy:3128\0NO_PROXY=localhost" /f"#
            ),
            "{text}"
        );
        assert!(text.find("reg.exe add").unwrap() < text.find("sc.exe start").unwrap());
        let multi = String::from_utf16(&environment_multi_sz(&spec)).unwrap();
        assert_eq!(multi, "HTTPS_PROXY=http://proxy:3128\0NO_PROXY=localhost\0\0");
    }
}
