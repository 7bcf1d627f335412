//! The Debian package, built and installed into a throwaway Debian root
//! by `tests/package-install.sh` (see there for every step): installed
//! beside bsd-mailx, mail through SMTP, sendmail and mail(1) to a system
//! user, newaliases, an upgrade with mail waiting; then the root booted
//! under systemd (systemd-nspawn), where the package's unit and the
//! unprivileged one run as shipped: socket activation, readiness, mail,
//! reload, newaliases, journal priorities, stop, and the sandbox; and a
//! purge. Root only; it needs cargo-deb, debootstrap and systemd-nspawn
//! (tests/install-test-tools.sh) and Debian's mirror.

mod support;

use std::process::Command;
use support::tool;

#[test]
fn the_debian_package_installs_delivers_runs_under_systemd_upgrades_and_purges() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the package test needs root (a throwaway Debian root, chroot, mounts)");
        return;
    }
    if !tool("debootstrap") || !tool("cargo-deb") || !tool("systemd-nspawn") {
        return;
    }
    let out = Command::new("tests/package-install.sh")
        .output()
        .expect("tests/package-install.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("figure:") || l.starts_with("package-install: note:"))
    {
        eprintln!("{line}");
    }
    assert!(
        out.status.success() && stdout.ends_with("package-install: ok\n"),
        "{stdout}\n{stderr}"
    );
}
