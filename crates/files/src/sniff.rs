//! The content type of an upload, from its first bytes only: the client's `Content-Type`
//! is never believed (a `.png` that is HTML must not be served as an image).

/// How many leading bytes the upload keeps for sniffing: the text check reads this much
/// (8 KiB, as browsers' MIME sniffing does for its binary-vs-text decision).
pub const HEAD_BYTES: usize = 8 * 1024;

/// The raster formats decoded (dimensions, thumbnail), stripped of metadata and served
/// `inline`; everything else is an `attachment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raster {
    Png,
    Jpeg,
    Gif,
    Webp,
}

impl Raster {
    pub fn content_type(self) -> &'static str {
        match self {
            Raster::Png => "image/png",
            Raster::Jpeg => "image/jpeg",
            Raster::Gif => "image/gif",
            Raster::Webp => "image/webp",
        }
    }

    pub fn from_content_type(ct: &str) -> Option<Raster> {
        match ct {
            "image/png" => Some(Raster::Png),
            "image/jpeg" => Some(Raster::Jpeg),
            "image/gif" => Some(Raster::Gif),
            "image/webp" => Some(Raster::Webp),
            _ => None,
        }
    }
}

/// Magic numbers at offset 0 (`None` bytes match anything).
const MAGIC: &[(&[Option<u8>], &str)] = &[
    (
        &[Some(0x25), Some(b'P'), Some(b'D'), Some(b'F'), Some(b'-')],
        "application/pdf",
    ),
    (
        &[Some(b'P'), Some(b'K'), Some(3), Some(4)],
        "application/zip",
    ),
    (
        &[Some(b'P'), Some(b'K'), Some(5), Some(6)],
        "application/zip",
    ),
    (&[Some(0x1f), Some(0x8b)], "application/gzip"),
    (
        &[
            Some(0x37),
            Some(0x7a),
            Some(0xbc),
            Some(0xaf),
            Some(0x27),
            Some(0x1c),
        ],
        "application/x-7z-compressed",
    ),
    (
        &[Some(b'O'), Some(b'g'), Some(b'g'), Some(b'S')],
        "audio/ogg",
    ),
    (&[Some(b'I'), Some(b'D'), Some(b'3')], "audio/mpeg"),
    (
        &[Some(b'f'), Some(b'L'), Some(b'a'), Some(b'C')],
        "audio/flac",
    ),
    (
        &[Some(0x1a), Some(0x45), Some(0xdf), Some(0xa3)],
        "video/webm",
    ),
    (
        &[
            Some(b'R'),
            Some(b'I'),
            Some(b'F'),
            Some(b'F'),
            None,
            None,
            None,
            None,
            Some(b'W'),
            Some(b'A'),
            Some(b'V'),
            Some(b'E'),
        ],
        "audio/wav",
    ),
    (
        &[
            None,
            None,
            None,
            None,
            Some(b'f'),
            Some(b't'),
            Some(b'y'),
            Some(b'p'),
        ],
        "video/mp4",
    ),
    (&[Some(b'B'), Some(b'M')], "image/bmp"),
    (&[Some(0), Some(0), Some(1), Some(0)], "image/x-icon"),
    (&[Some(b'I'), Some(b'I'), Some(0x2a), Some(0)], "image/tiff"),
    (&[Some(b'M'), Some(b'M'), Some(0), Some(0x2a)], "image/tiff"),
];

fn matches(head: &[u8], magic: &[Option<u8>]) -> bool {
    head.len() >= magic.len()
        && magic
            .iter()
            .zip(head)
            .all(|(m, b)| m.is_none_or(|m| m == *b))
}

/// The raster image format the bytes start with, if any.
pub fn raster(head: &[u8]) -> Option<Raster> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Raster::Png)
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(Raster::Jpeg)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some(Raster::Gif)
    } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        Some(Raster::Webp)
    } else {
        None
    }
}

/// The content type of a file starting with `head` (at most [`HEAD_BYTES`] of it).
pub fn content_type(head: &[u8]) -> &'static str {
    if let Some(r) = raster(head) {
        return r.content_type();
    }
    if let Some((_, ct)) = MAGIC.iter().find(|(m, _)| matches(head, m)) {
        return ct;
    }
    if !is_text(head) {
        return "application/octet-stream";
    }
    // Active text formats are named for what they are, so they are never served inline
    // and a client can tell them apart (they are `attachment` like every non-image).
    let text = String::from_utf8_lossy(head);
    let start = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .chars()
        .take(256)
        .collect::<String>()
        .to_ascii_lowercase();
    if start.starts_with("<svg") || (start.starts_with("<?xml") && text.contains("<svg")) {
        "image/svg+xml"
    } else if [
        "<!doctype html",
        "<html",
        "<head",
        "<body",
        "<script",
        "<iframe",
    ]
    .iter()
    .any(|p| start.starts_with(p))
    {
        "text/html"
    } else if start.starts_with("<?xml") {
        "application/xml"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// UTF-8 (a sequence cut by the end of the head is fine) without NUL or other C0 controls
/// than tab, line feed, form feed, carriage return and escape.
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    valid
        && head
            .iter()
            .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | 0x1b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_from_bytes() {
        assert_eq!(content_type(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(content_type(&[0xff, 0xd8, 0xff, 0xe0]), "image/jpeg");
        assert_eq!(content_type(b"GIF89a..."), "image/gif");
        assert_eq!(content_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(content_type(b"%PDF-1.7"), "application/pdf");
        assert_eq!(content_type(b"PK\x03\x04rest"), "application/zip");
        assert_eq!(content_type(b"\0\0\0\x18ftypmp42"), "video/mp4");
        assert_eq!(content_type(b"hello\nworld"), "text/plain; charset=utf-8");
        assert_eq!(
            content_type("h\u{e9}llo".as_bytes()),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type(b"  <svg xmlns=\"x\">"), "image/svg+xml");
        assert_eq!(
            content_type(b"<?xml version=\"1.0\"?>\n<svg>"),
            "image/svg+xml"
        );
        assert_eq!(content_type(b"<!DOCTYPE html><p>"), "text/html");
        assert_eq!(
            content_type(b"\0\x01\x02binary"),
            "application/octet-stream"
        );
        assert_eq!(content_type(&[0xe2, 0x82]), "text/plain; charset=utf-8");
        assert_eq!(
            content_type(&[0xff, 0xfe, 0x00]),
            "application/octet-stream"
        );
    }
}
