//! What this CPU is: its model name and its caches, as the kernel reports them (Linux: `/proc`
//! and `/sys`; elsewhere nothing is known and the functions say so). `tessera info --system`
//! prints them, and benchmark output names the CPU it was measured on, since the same code ranks
//! differently against its peers on different hosts.

use std::path::Path;

/// One cache level as the OS describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    /// 1, 2, 3, ...
    pub level: u32,
    /// "Data", "Instruction" or "Unified".
    pub kind: String,
    /// Size in bytes.
    pub bytes: u64,
    /// The logical CPUs sharing it, as the kernel lists them (e.g. "0-1").
    pub shared_with: String,
}

/// The CPU's model name (`model name` in `/proc/cpuinfo` on x86, with family/model numbers when
/// the name is generic, as under some hypervisors; the implementer and part on Arm), or
/// "unknown".
pub fn model_name() -> String {
    let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") else {
        return "unknown".into();
    };
    model_name_from(&text)
}

/// [`model_name`] from the text of `/proc/cpuinfo`.
pub fn model_name_from(cpuinfo: &str) -> String {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    if let Some(name) = field("model name") {
        // A hypervisor may hide the marketing name ("Intel(R) Xeon(R) Processor"): the family
        // and model numbers still tell the generation.
        return match (field("cpu family"), field("model")) {
            (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
            _ => name,
        };
    }
    match (field("CPU implementer"), field("CPU part")) {
        (Some(i), Some(p)) => format!("Arm implementer {i}, part {p}"),
        _ => "unknown".into(),
    }
}

/// The caches of CPU 0 (`/sys/devices/system/cpu/cpu0/cache`), smallest level first; empty when
/// the OS does not say.
pub fn caches() -> Vec<Cache> {
    caches_in(Path::new("/sys/devices/system/cpu/cpu0/cache"))
}

/// [`caches`] from a directory laid out as Linux's `cpu0/cache` (`index*/{level,type,size,
/// shared_cpu_list}`).
pub fn caches_in(dir: &Path) -> Vec<Cache> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Cache> = entries
        .filter_map(|e| {
            let p = e.ok()?.path();
            if !p.file_name()?.to_str()?.starts_with("index") {
                return None;
            }
            let read = |f: &str| {
                std::fs::read_to_string(p.join(f))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            Some(Cache {
                level: read("level")?.parse().ok()?,
                kind: read("type")?,
                bytes: parse_size(&read("size")?)?,
                shared_with: read("shared_cpu_list").unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.level, &a.kind).cmp(&(b.level, &b.kind)));
    out
}

/// "48K", "2048K", "32M" or a plain byte count, as `/sys` writes cache sizes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// Human-readable cache size ("48 KiB", "2 MiB", "480 MiB").
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        let intel = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n\
                     model name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            model_name_from(intel),
            "Intel(R) Xeon(R) Processor (family 6, model 143)"
        );
        let arm = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";
        assert_eq!(model_name_from(arm), "Arm implementer 0x41, part 0xd0c");
        assert_eq!(model_name_from(""), "unknown");
    }

    #[test]
    fn caches_from_a_sysfs_tree() {
        let dir = std::env::temp_dir().join(format!("tessera-cpu-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (i, (level, kind, size, shared)) in [
            (2, "Unified", "2048K", "0"),
            (1, "Data", "48K", "0"),
            (3, "Unified", "480M", "0-1"),
            (1, "Instruction", "32K", "0"),
        ]
        .into_iter()
        .enumerate()
        {
            let d = dir.join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("level"), format!("{level}\n")).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
            std::fs::write(d.join("shared_cpu_list"), format!("{shared}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.join("power")).unwrap();
        let c = caches_in(&dir);
        let summary: Vec<(u32, &str, u64)> = c
            .iter()
            .map(|c| (c.level, c.kind.as_str(), c.bytes))
            .collect();
        assert_eq!(
            summary,
            [
                (1, "Data", 48 << 10),
                (1, "Instruction", 32 << 10),
                (2, "Unified", 2 << 20),
                (3, "Unified", 480 << 20)
            ]
        );
        assert_eq!(c[3].shared_with, "0-1");
        assert_eq!(human_size(c[3].bytes), "480 MiB");
        assert_eq!(human_size(48 << 10), "48 KiB");
        assert!(caches_in(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
