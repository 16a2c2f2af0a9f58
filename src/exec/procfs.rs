//! Reading `/proc` (Linux): process states, start times, parents, environments.

/// The fields of `/proc/PID/stat` the sidecar uses.
pub struct Stat {
    pub pid: i32,
    pub pgrp: i32,
    pub ppid: i32,
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// Fields after the command name (which may hold spaces and parentheses): the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field N is fields[N - 3].
    Some(Stat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every process, zombies included (skipping those that vanish while being read).
fn every() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Every live process (not a zombie).
pub fn all() -> Vec<Stat> {
    let mut live = every();
    live.retain(|s| s.state != 'Z' && s.state != 'X');
    live
}

/// This process's children: `/proc/self/task/*/children`, else a scan of every process.
pub fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    if !listed {
        out = every()
            .into_iter()
            .filter(|s| s.ppid == me)
            .map(|s| s.pid)
            .collect();
    }
    out
}

/// One variable of a process's environment (as it was when it started).
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    bytes.split(|b| *b == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        entry.strip_prefix(&prefix).map(str::to_owned)
    })
}

pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_fields_after_a_hostile_command_name() {
        let line = "4242 (a) b (c) Z 17 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        let s = super::parse_stat(4242, line).unwrap();
        assert_eq!((s.state, s.ppid, s.pgrp, s.start), ('Z', 17, 4242, 98765));
        let me = super::stat(std::process::id() as i32).unwrap();
        // SAFETY: getppid has no preconditions.
        assert_eq!(me.ppid, unsafe { libc::getppid() });
    }
}
