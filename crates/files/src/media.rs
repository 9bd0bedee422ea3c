//! Images: metadata stripped, dimensions read, a thumbnail made — on a blocking thread,
//! with bounded decoding.
//!
//! Metadata is stripped **losslessly**, by dropping the chunks/segments that carry it,
//! not by re-encoding: a re-encoded JPEG loses quality at every upload and a re-encoded
//! PNG can grow, while the pixels are not where EXIF/GPS live. Dropped: PNG `eXIf`,
//! `tEXt`, `zTXt`, `iTXt`, `tIME`; JPEG APP1 (EXIF, XMP), APP3–APP13 (IPTC, vendor
//! blocks), APP15 and COM (kept: APP0 JFIF, APP2 `ICC_PROFILE` for colours, APP14 Adobe
//! for the colour transform); WebP `EXIF` and `XMP ` chunks (and their VP8X flags); GIF
//! comment and application extensions other than the looping ones (NETSCAPE2.0,
//! ANIMEXTS1.0). The EXIF orientation goes with EXIF: a phone photo taken sideways shows
//! as stored (the price of not re-encoding).
//!
//! Decoding is bounded by [`image::Limits`]: an image declaring more than
//! `max_dimension` pixels a side, or needing more than `max_alloc` bytes, is refused
//! (400 `invalid_image`) before its pixels are allocated — a 100 000 × 100 000 PNG of a
//! few hundred bytes is a decompression bomb. So is anything that starts like an image
//! and does not decode: whatever is served `inline` as an image decoded cleanly here.

use std::io::Cursor;

use crate::sniff::Raster;

/// Thumbnails fit in a 320 × 320 box (API.md), aspect ratio kept; PNG (lossless, alpha).
pub const THUMBNAIL_MAX: u32 = 320;

#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_dimension: u32,
    pub max_alloc: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the image is malformed: {0}")]
    Malformed(&'static str),
    #[error("the image does not decode within the limits: {0}")]
    Decode(String),
}

/// A processed image: the bytes to store, and what the API says about it.
pub struct Processed {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub thumbnail: Vec<u8>,
}

/// Strips `bytes` of metadata, decodes them within `limits`, and makes the thumbnail.
pub fn process(
    raster: Raster,
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<Processed, MediaError> {
    let stripped = strip(raster, bytes)?;
    let format = match raster {
        Raster::Png => image::ImageFormat::Png,
        Raster::Jpeg => image::ImageFormat::Jpeg,
        Raster::Gif => image::ImageFormat::Gif,
        Raster::Webp => image::ImageFormat::WebP,
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(&stripped), format);
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_dimension);
    l.max_image_height = Some(limits.max_dimension);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let img = reader
        .decode()
        .map_err(|e| MediaError::Decode(e.to_string()))?;
    let (width, height) = (img.width(), img.height());
    let thumb = img.thumbnail(THUMBNAIL_MAX, THUMBNAIL_MAX);
    let thumb = image::DynamicImage::ImageRgba8(thumb.to_rgba8());
    let mut thumbnail = Vec::new();
    thumb
        .write_to(&mut Cursor::new(&mut thumbnail), image::ImageFormat::Png)
        .map_err(|e| MediaError::Decode(e.to_string()))?;
    Ok(Processed {
        bytes: stripped,
        width,
        height,
        thumbnail,
    })
}

/// The image without its metadata blocks (see the module documentation).
pub fn strip(raster: Raster, bytes: &[u8]) -> Result<Vec<u8>, MediaError> {
    match raster {
        Raster::Png => strip_png(bytes),
        Raster::Jpeg => strip_jpeg(bytes),
        Raster::Gif => strip_gif(bytes),
        Raster::Webp => strip_webp(bytes),
    }
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn le32(b: &[u8]) -> usize {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn strip_png(b: &[u8]) -> Result<Vec<u8>, MediaError> {
    const DROP: &[&[u8; 4]] = &[b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"];
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b.get(..8).ok_or(MediaError::Malformed("short PNG"))?);
    let mut i = 8;
    while i < b.len() {
        let header = b
            .get(i..i + 8)
            .ok_or(MediaError::Malformed("truncated PNG chunk"))?;
        let len = be32(header);
        let end = i
            .checked_add(12)
            .and_then(|x| x.checked_add(len))
            .filter(|&e| e <= b.len())
            .ok_or(MediaError::Malformed("PNG chunk past the end"))?;
        let kind = &header[4..8];
        if !DROP.iter().any(|d| kind == &d[..]) {
            out.extend_from_slice(&b[i..end]);
        }
        i = end;
        if kind == b"IEND" {
            break;
        }
    }
    Ok(out)
}

fn strip_jpeg(b: &[u8]) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b.get(..2).ok_or(MediaError::Malformed("short JPEG"))?);
    let mut i = 2;
    loop {
        // Markers may be padded with extra 0xFF bytes.
        while b.get(i) == Some(&0xff) && b.get(i + 1) == Some(&0xff) {
            i += 1;
        }
        let marker = *b
            .get(i..i + 2)
            .ok_or(MediaError::Malformed("truncated JPEG"))?
            .get(1)
            .ok_or(MediaError::Malformed("truncated JPEG"))?;
        if b[i] != 0xff {
            return Err(MediaError::Malformed("JPEG segment without a marker"));
        }
        // Standalone markers (TEM, RSTn) carry no length.
        if marker == 0x01 || (0xd0..=0xd7).contains(&marker) {
            out.extend_from_slice(&b[i..i + 2]);
            i += 2;
            continue;
        }
        if marker == 0xd9 {
            out.extend_from_slice(&b[i..i + 2]);
            return Ok(out);
        }
        let len = b
            .get(i + 2..i + 4)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            .ok_or(MediaError::Malformed("truncated JPEG segment"))?;
        let end = i + 2 + len;
        if len < 2 || end > b.len() {
            return Err(MediaError::Malformed("JPEG segment past the end"));
        }
        if marker == 0xda {
            // Start of scan: the entropy-coded data (and, in progressive files, further
            // tables and scans) follows; metadata segments come before the first scan.
            out.extend_from_slice(&b[i..]);
            return Ok(out);
        }
        let payload = &b[i + 4..end];
        let keep = match marker {
            0xe0 | 0xee => true,
            0xe2 => payload.starts_with(b"ICC_PROFILE\0"),
            0xe1 | 0xe3..=0xed | 0xef | 0xfe => false,
            _ => true,
        };
        if keep {
            out.extend_from_slice(&b[i..end]);
        }
        i = end;
    }
}

fn strip_webp(b: &[u8]) -> Result<Vec<u8>, MediaError> {
    if b.len() < 12 {
        return Err(MediaError::Malformed("short WebP"));
    }
    let riff_end = (le32(&b[4..8]) + 8).min(b.len());
    let mut body = Vec::with_capacity(b.len());
    body.extend_from_slice(b"WEBP");
    let mut i = 12;
    while i + 8 <= riff_end {
        let kind = &b[i..i + 4];
        let len = le32(&b[i + 4..i + 8]);
        let padded = len + (len & 1);
        let end = (i + 8 + padded).min(riff_end);
        if i + 8 + len > riff_end {
            return Err(MediaError::Malformed("WebP chunk past the end"));
        }
        match kind {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                let start = body.len();
                body.extend_from_slice(&b[i..end]);
                // Flags byte: bit 3 EXIF, bit 2 XMP — no longer present.
                if let Some(flags) = body.get_mut(start + 8) {
                    *flags &= !(0x08 | 0x04);
                }
            }
            _ => body.extend_from_slice(&b[i..end]),
        }
        i = end;
    }
    let size = u32::try_from(body.len()).map_err(|_| MediaError::Malformed("WebP too large"))?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Skips GIF data sub-blocks from `i`; returns the index after the terminator.
fn gif_sub_blocks(b: &[u8], mut i: usize) -> Result<usize, MediaError> {
    loop {
        let n = usize::from(*b.get(i).ok_or(MediaError::Malformed("truncated GIF"))?);
        i += 1;
        if n == 0 {
            return Ok(i);
        }
        i += n;
        if i > b.len() {
            return Err(MediaError::Malformed("GIF block past the end"));
        }
    }
}

fn strip_gif(b: &[u8]) -> Result<Vec<u8>, MediaError> {
    let packed = *b.get(10).ok_or(MediaError::Malformed("short GIF"))?;
    let mut i = 13;
    if packed & 0x80 != 0 {
        i += 3 << ((packed & 7) + 1);
    }
    if i > b.len() {
        return Err(MediaError::Malformed("GIF colour table past the end"));
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..i]);
    loop {
        match *b
            .get(i)
            .ok_or(MediaError::Malformed("GIF without a trailer"))?
        {
            0x3b => {
                out.push(0x3b);
                return Ok(out);
            }
            0x21 => {
                let label = *b.get(i + 1).ok_or(MediaError::Malformed("truncated GIF"))?;
                let end = gif_sub_blocks(b, i + 2)?;
                let keep = match label {
                    0xfe => false,
                    0xff => {
                        let id = b.get(i + 3..i + 14).unwrap_or_default();
                        id == b"NETSCAPE2.0" || id == b"ANIMEXTS1.0"
                    }
                    _ => true,
                };
                if keep {
                    out.extend_from_slice(&b[i..end]);
                }
                i = end;
            }
            0x2c => {
                let desc_end = i + 10;
                let packed = *b.get(i + 9).ok_or(MediaError::Malformed("truncated GIF"))?;
                let mut j = desc_end;
                if packed & 0x80 != 0 {
                    j += 3 << ((packed & 7) + 1);
                }
                // LZW minimum code size, then the data sub-blocks.
                let end = gif_sub_blocks(b, j + 1)?;
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            _ => return Err(MediaError::Malformed("unknown GIF block")),
        }
    }
}
