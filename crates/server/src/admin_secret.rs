//! The administrator secret used when no `requirepass` is configured.
//!
//! A server must never be administrable by whoever can connect (tenants included), so without a
//! configured password the server makes one: 32 random bytes, hex-encoded, written at first
//! start to a file only its owner can read (mode 0600, in a 0700 directory), and read again on
//! later starts. The operator reads the file (`redis-cli -a "$(cat data/admin.secret)"`); the
//! secret itself is never logged or printed, only where it is.

use std::io::Write;
use std::path::Path;

/// Reads the secret at `path`, creating the file with a fresh secret when it does not exist.
/// Returns the secret and whether it was just created.
pub fn load_or_create(path: &Path) -> std::io::Result<(String, bool)> {
    match read(path) {
        Ok(s) => return Ok((s, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let secret = generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(format!("{secret}\n").as_bytes())?;
            f.sync_all()?;
            Ok((secret, true))
        }
        // Another server sharing the directory created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read(path)?, false)),
        Err(e) => Err(e),
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the administrator secret file is readable by other users; chmod 600 it"
            );
        }
    }
    Ok(secret.to_string())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// 32 random bytes as 64 hex digits.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/admin.secret");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(a.len(), 64);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
    }

    #[test]
    fn an_empty_file_is_an_error_not_an_empty_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.secret");
        std::fs::write(&path, "\n").unwrap();
        assert!(load_or_create(&path).is_err());
    }
}
