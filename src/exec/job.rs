//! Windows: a job object per started process group, the Windows counterpart of a Unix process
//! group. Every process a wake command (or a direct-execution command) starts belongs to the
//! job unless it breaks away, so a backgrounded agent (`start "" /b agent.exe`) is seen alive
//! after the wake shell exits, and stopping the task terminates it, without ever signalling a
//! process that merely reused the shell's PID.
//!
//! The child starts suspended ([`CREATE_SUSPENDED`]) and runs only once it is in its job
//! ([`track`]), so nothing it starts escapes the job. The last `MAX_JOBS` jobs are kept;
//! closing a job's handle leaves its processes running.

use std::ffi::c_void;
use std::sync::Mutex;

/// The creation flag a tracked process is started with: [`track`] resumes it.
pub const CREATE_SUSPENDED: u32 = 0x0000_0004;

/// How many jobs are remembered (the oldest empty one is forgotten first).
const MAX_JOBS: usize = 64;

/// `JobObjectBasicAccountingInformation`.
const BASIC_ACCOUNTING: i32 = 1;

/// `JOBOBJECT_BASIC_ACCOUNTING_INFORMATION` from `winnt.h`.
#[repr(C)]
#[derive(Default)]
struct BasicAccounting {
    total_user_time: i64,
    total_kernel_time: i64,
    this_period_total_user_time: i64,
    this_period_total_kernel_time: i64,
    total_page_fault_count: u32,
    total_processes: u32,
    active_processes: u32,
    total_terminated_processes: u32,
}

#[link(name = "kernel32")]
extern "system" {
    fn CreateJobObjectW(attributes: *mut c_void, name: *const u16) -> *mut c_void;
    fn AssignProcessToJobObject(job: *mut c_void, process: *mut c_void) -> i32;
    fn TerminateJobObject(job: *mut c_void, exit_code: u32) -> i32;
    fn QueryInformationJobObject(
        job: *mut c_void,
        class: i32,
        info: *mut c_void,
        length: u32,
        returned: *mut u32,
    ) -> i32;
    fn CloseHandle(handle: *mut c_void) -> i32;
}

#[link(name = "ntdll")]
extern "system" {
    fn NtResumeProcess(process: *mut c_void) -> i32;
}

/// An owned job handle (a `HANDLE` kept as an integer so the table is `Send`).
struct Job(isize);

impl Job {
    fn handle(&self) -> *mut c_void {
        self.0 as *mut c_void
    }

    /// How many processes of the job are alive; `None` when the job cannot be asked.
    fn active(&self) -> Option<u32> {
        let mut info = BasicAccounting::default();
        // SAFETY: a live job handle and a buffer of the size passed.
        let ok = unsafe {
            QueryInformationJobObject(
                self.handle(),
                BASIC_ACCOUNTING,
                (&mut info as *mut BasicAccounting).cast(),
                std::mem::size_of::<BasicAccounting>() as u32,
                std::ptr::null_mut(),
            )
        } != 0;
        ok.then_some(info.active_processes)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: the handle is ours and closed once.
        unsafe { CloseHandle(self.handle()) };
    }
}

/// The jobs by the PID of the process each was made for (the group's "pgid").
static JOBS: Mutex<Vec<(u32, Job)>> = Mutex::new(Vec::new());

/// Put the process `pid` (its handle `process`), started with [`CREATE_SUSPENDED`], in a new
/// job of its own, then let it run (whether or not that worked). Returns false when the job
/// could not be made or the process could not join it (the group is then stopped with
/// `taskkill` and not seen after its leader exits).
///
/// # Safety
/// `process` is a live process handle (the `Child`'s own, while the `Child` is kept).
pub unsafe fn track(pid: u32, process: *mut c_void) -> bool {
    let tracked = join_new_job(pid, process);
    // SAFETY: a live process handle (the caller's promise).
    unsafe { NtResumeProcess(process) };
    tracked
}

fn join_new_job(pid: u32, process: *mut c_void) -> bool {
    // SAFETY: no attributes, no name: a new anonymous job.
    let raw = unsafe { CreateJobObjectW(std::ptr::null_mut(), std::ptr::null()) };
    if raw.is_null() {
        return false;
    }
    let job = Job(raw as isize);
    // SAFETY: both handles are live (the child's is owned by its `Child`).
    if unsafe { AssignProcessToJobObject(job.handle(), process) } == 0 {
        return false;
    }
    let mut jobs = JOBS.lock().unwrap_or_else(|e| e.into_inner());
    jobs.retain(|(p, _)| *p != pid);
    if jobs.len() >= MAX_JOBS {
        let empty = jobs.iter().position(|(_, j)| j.active() == Some(0));
        jobs.remove(empty.unwrap_or(0));
    }
    jobs.push((pid, job));
    true
}

/// Whether the job made for `pid` still has a process; `None` when there is no such job.
pub fn alive(pid: u32) -> Option<bool> {
    let jobs = JOBS.lock().unwrap_or_else(|e| e.into_inner());
    let (_, job) = jobs.iter().find(|(p, _)| *p == pid)?;
    Some(job.active().is_none_or(|n| n > 0))
}

/// Terminate every process of the job made for `pid`; false when there is no such job.
pub fn terminate(pid: u32) -> bool {
    let jobs = JOBS.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_, job)) = jobs.iter().find(|(p, _)| *p == pid) else {
        return false;
    };
    // SAFETY: a live job handle.
    unsafe { TerminateJobObject(job.handle(), 1) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::io::AsRawHandle;
    use std::time::{Duration, Instant};

    fn poll(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_backgrounded_child_keeps_the_job_alive_until_terminated() {
        use std::os::windows::process::CommandExt;
        // The shell starts a long ping in the background (its first command) and exits at once.
        let mut shell = std::process::Command::new("cmd.exe")
            .args(["/D", "/C", "start", "/b", "ping", "-n", "60", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .creation_flags(CREATE_SUSPENDED)
            .spawn()
            .unwrap();
        let pid = shell.id();
        // SAFETY: the child's handle, alive while `shell` is.
        assert!(unsafe { track(pid, shell.as_raw_handle().cast()) });
        assert!(shell.wait().unwrap().success());
        poll("the background ping to be in the job", || {
            alive(pid) == Some(true)
        });
        assert_eq!(alive(pid), Some(true), "the shell exited, its child lives on");
        assert!(terminate(pid));
        poll("the job to empty", || alive(pid) == Some(false));
        assert_eq!(alive(pid + 1_000_000), None);
        assert!(!terminate(pid + 1_000_000));
    }
}
