//! ADD of `http(s)://` sources: the download (reqwest, blocking, bounded time) into the store's
//! temp space, hashed (sha256) while it streams, with the name and time BuildKit gives the file:
//! the `Content-Disposition` filename or the URL path's last component, and `Last-Modified`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lade_cache::{Digest, Hasher};

use crate::{Error, Result};

/// A downloaded file.
#[derive(Debug, Clone)]
pub struct Download {
    pub path: PathBuf,
    /// sha256 of the content.
    pub digest: Digest,
    /// The file name it gets in the image.
    pub name: String,
    /// `Last-Modified`, as Unix seconds.
    pub mtime: Option<i64>,
}

/// Downloads `url` into `dir` (which must exist), verifying `checksum` (`sha256:<hex>`) when
/// given.
pub fn download(url: &str, dir: &Path, checksum: Option<&str>) -> Result<Download> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(3600))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot set up an HTTP client: {e}")))?;
    let mut resp = client
        .get(url)
        .send()
        .map_err(|e| Error::Invalid(format!("cannot download {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Error::Invalid(format!(
            "cannot download {url}: the server answered {}",
            resp.status()
        )));
    }
    let name = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(disposition_filename)
        .unwrap_or_else(|| url_file_name(url));
    let mtime = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let path = dir.join("download");
    let mut f = std::fs::File::create(&path).map_err(crate::io_err("create", &path))?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = resp
            .read(&mut buf)
            .map_err(|e| Error::Invalid(format!("cannot download {url}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n])
            .map_err(crate::io_err("write", &path))?;
    }
    let digest = h.finish();
    if let Some(want) = checksum {
        if want != digest.as_str() {
            return Err(Error::Invalid(format!(
                "digest mismatch for {url}: --checksum says {want}, the download is {digest}"
            )));
        }
    }
    Ok(Download {
        path,
        digest,
        name,
        mtime,
    })
}

/// BuildKit: the last component of the URL's path, `index.html`-less (`__unnamed__` if none).
pub fn url_file_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query
        .split_once("://")
        .map(|(_, r)| r.split_once('/').map_or("", |(_, p)| p))
        .unwrap_or("");
    match path.rsplit('/').find(|c| !c.is_empty()) {
        Some(n) => n.to_string(),
        None => "__unnamed__".to_string(),
    }
}

fn disposition_filename(v: &str) -> Option<String> {
    v.split(';').find_map(|p| {
        let p = p.trim();
        let f = p.strip_prefix("filename=")?;
        let f = f.trim_matches('"');
        let base = f.rsplit('/').next()?;
        (!base.is_empty()).then(|| base.to_string())
    })
}

/// RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, d, mon, y, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = d.parse().ok()?;
    let y: i64 = y.parse().ok()?;
    let t: Vec<i64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
    let [hh, mm, ss] = t.as_slice() else {
        return None;
    };
    // days from civil (Howard Hinnant)
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dates() {
        assert_eq!(url_file_name("http://h/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(url_file_name("http://h/dir/"), "dir");
        assert_eq!(url_file_name("http://h"), "__unnamed__");
        assert_eq!(
            disposition_filename("attachment; filename=\"x.txt\""),
            Some("x.txt".into())
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:10 GMT"), Some(10));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }
}
