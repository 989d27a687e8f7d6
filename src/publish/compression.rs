//! The layer compressions of the direct push ([`Compression`], the `compression` and
//! `compression-level` inputs) and what each implies: the writer that compresses a layer
//! as it streams ([`LayerWriter`]), the layer's media type, and the manifest format that
//! can name it ([`ManifestFormat`]).
//!
//! - **gzip**, the default: parallel libdeflate ([`gzip`]), one standard gzip member,
//!   in a Docker schema 2 manifest as `docker push` writes it, so every runtime pulls it.
//! - **zstd**: zstd's own multi-threaded encoder (one frame), the OCI zstd layer media
//!   type, hence an OCI image manifest. Pulled by Docker Engine ≥ 23, containerd ≥ 1.5
//!   (so EKS, and ECS and Fargate on their current agents); Lambda documents no zstd, so
//!   gzip stays the default (see the README).

use std::io::{self, Write};

use super::gzip::{self, GzipWriter, Pool};

/// Docker schema 2 (what `docker push` writes) names gzip layers only.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// zstd's own default level: 3.5× libdeflate 6's speed here, and smaller (measured in
/// BENCHMARKS.md).
pub const ZSTD_DEFAULT_LEVEL: u32 = 3;
/// The highest zstd level taken (20-22 need zstd's "ultra" window, which pullers may refuse).
pub const ZSTD_MAX_LEVEL: u32 = 19;
/// zstd's multi-threaded job size (see [`Compression::writer`]).
const ZSTD_JOB: u32 = 1 << 20;
/// gzip levels as zlib and Go number them (libdeflate takes the same numbers, and more).
pub const GZIP_MAX_LEVEL: u32 = 9;

/// How the direct push compresses new layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip { level: u32 },
    Zstd { level: u32 },
}

impl Default for Compression {
    fn default() -> Self {
        Self::Gzip {
            level: gzip::DEFAULT_LEVEL,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} level {}", self.name(), self.level())
    }
}

impl Compression {
    /// The input's names.
    pub const NAMES: [&'static str; 2] = ["gzip", "zstd"];

    /// `name` (one of [`Self::NAMES`]) at `level`, or its default level; the error says
    /// which levels the name takes.
    pub fn new(name: &str, level: Option<u32>) -> Result<Self, String> {
        let (max, default, make): (u32, u32, fn(u32) -> Self) = match name {
            "gzip" => (GZIP_MAX_LEVEL, gzip::DEFAULT_LEVEL, |level| Self::Gzip {
                level,
            }),
            "zstd" => (ZSTD_MAX_LEVEL, ZSTD_DEFAULT_LEVEL, |level| Self::Zstd {
                level,
            }),
            _ => return Err(format!("must be one of {}", Self::NAMES.join(", "))),
        };
        match level.unwrap_or(default) {
            level @ 1.. if level <= max => Ok(make(level)),
            level => Err(format!("{name} takes levels 1 to {max}, not {level}")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip { .. } => "gzip",
            Self::Zstd { .. } => "zstd",
        }
    }

    pub fn level(self) -> u32 {
        match self {
            Self::Gzip { level } | Self::Zstd { level } => level,
        }
    }

    /// Whether a layer blob of `media_type` (a reused one) may go in a manifest of this
    /// push: gzip always; zstd only when this push writes zstd (so an OCI manifest) too.
    pub fn takes_layer(self, media_type: &str) -> bool {
        match LayerCodec::of(media_type) {
            Some(LayerCodec::Gzip) => true,
            Some(LayerCodec::Zstd) => matches!(self, Self::Zstd { .. }),
            None => false,
        }
    }

    /// A writer that compresses into `out`, on `pool` for gzip and on `threads` of zstd's
    /// own for zstd.
    pub fn writer<W: Write>(self, pool: &Pool, out: W) -> io::Result<LayerWriter<'_, W>> {
        Ok(match self {
            Self::Gzip { level } => LayerWriter::Gzip(GzipWriter::new(pool, out, level)),
            Self::Zstd { level } => {
                let mut encoder =
                    zstd::stream::write::Encoder::new(Counting::new(out), zstd_level(level))?;
                // No checksum: the layer's digest covers it, as BuildKit's zstd leaves it out.
                encoder.include_checksum(false)?;
                let threads = u32::try_from(pool.threads()).unwrap_or(1);
                if threads > 1 {
                    encoder.multithread(threads)?;
                    // zstd's default job is 4 windows (8 MiB at level 3), each held twice
                    // (in and out) per worker: 1 MiB jobs keep the action under 64 MiB (BENCHMARKS.md).
                    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
                }
                LayerWriter::Zstd {
                    encoder,
                    input_bytes: 0,
                }
            }
        })
    }

    /// `data` compressed in one go (small layers).
    pub fn compress_bytes(self, pool: &Pool, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut writer = self.writer(pool, Vec::new())?;
        writer.write_all(data)?;
        Ok(writer.finish()?.0)
    }
}

fn zstd_level(level: u32) -> i32 {
    i32::try_from(level.min(ZSTD_MAX_LEVEL)).unwrap_or(3)
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerCodec {
    Gzip,
    Zstd,
}

impl LayerCodec {
    pub fn of(media_type: &str) -> Option<Self> {
        match media_type {
            DOCKER_GZIP_LAYER | OCI_GZIP_LAYER => Some(Self::Gzip),
            OCI_ZSTD_LAYER => Some(Self::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// The two image manifest formats a registry takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// `application/vnd.docker.distribution.manifest.v2+json`, gzip layers only.
    Docker,
    /// `application/vnd.oci.image.manifest.v1+json`.
    Oci,
}

impl ManifestFormat {
    /// The format for a push that writes `compression` and whose reused layers are
    /// `codecs`: OCI as soon as one layer is zstd.
    pub fn for_layers(
        compression: Compression,
        codecs: impl IntoIterator<Item = LayerCodec>,
    ) -> Self {
        if std::iter::once(compression.codec())
            .chain(codecs)
            .any(|c| c == LayerCodec::Zstd)
        {
            Self::Oci
        } else {
            Self::Docker
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Self::Docker => DOCKER_CONFIG,
            Self::Oci => OCI_CONFIG,
        }
    }

    /// The layer media type of `codec` in this format.
    pub fn layer_media_type(self, codec: LayerCodec) -> &'static str {
        match (self, codec) {
            (Self::Docker, _) => DOCKER_GZIP_LAYER,
            (Self::Oci, LayerCodec::Gzip) => OCI_GZIP_LAYER,
            (Self::Oci, LayerCodec::Zstd) => OCI_ZSTD_LAYER,
        }
    }
}

impl Compression {
    /// The codec of the layers this compression writes.
    pub fn codec(self) -> LayerCodec {
        match self {
            Self::Gzip { .. } => LayerCodec::Gzip,
            Self::Zstd { .. } => LayerCodec::Zstd,
        }
    }
}

/// What a finished layer stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    /// Uncompressed bytes.
    pub input_bytes: u64,
    /// Compressed bytes written.
    pub output_bytes: u64,
}

/// Compresses what it is given into `W`; [`LayerWriter::finish`] ends the stream.
pub enum LayerWriter<'p, W: Write> {
    Gzip(GzipWriter<'p, W>),
    Zstd {
        encoder: zstd::stream::write::Encoder<'static, Counting<W>>,
        input_bytes: u64,
    },
}

impl<W: Write> std::fmt::Debug for LayerWriter<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gzip(writer) => writer.fmt(f),
            Self::Zstd { input_bytes, .. } => f
                .debug_struct("ZstdWriter")
                .field("input_bytes", input_bytes)
                .finish_non_exhaustive(),
        }
    }
}

impl<W: Write> LayerWriter<'_, W> {
    /// Ends the stream: what was written to, and how much went in and came out.
    pub fn finish(self) -> io::Result<(W, Compressed)> {
        match self {
            Self::Gzip(writer) => {
                let (out, summary) = writer.finish()?;
                Ok((
                    out,
                    Compressed {
                        input_bytes: summary.input_bytes,
                        output_bytes: summary.output_bytes,
                    },
                ))
            }
            Self::Zstd {
                encoder,
                input_bytes,
            } => {
                let mut counting = encoder.finish()?;
                counting.inner.flush()?;
                Ok((
                    counting.inner,
                    Compressed {
                        input_bytes,
                        output_bytes: counting.written,
                    },
                ))
            }
        }
    }
}

impl<W: Write> Write for LayerWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Gzip(writer) => writer.write(buf),
            Self::Zstd {
                encoder,
                input_bytes,
            } => {
                let n = encoder.write(buf)?;
                *input_bytes += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing would end a zstd block or a deflate chunk early: only `finish` does.
        Ok(())
    }
}

/// Counts what passes through to `inner`.
#[derive(Debug)]
pub struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Self {
        Self { inner, written: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("line {i} of a layer\n").into_bytes())
            .collect()
    }

    /// Both compressions, on one thread and several, give one stream that decompresses
    /// to the input, with the sizes counted as they are.
    #[test]
    fn both_compressions_round_trip_with_their_sizes() {
        let data = sample();
        for threads in [1, 3] {
            let pool = Pool::new(threads);
            for compression in [
                Compression::default(),
                Compression::new("zstd", None).unwrap(),
                Compression::new("zstd", Some(1)).unwrap(),
            ] {
                let mut writer = compression.writer(&pool, Vec::new()).unwrap();
                writer.write_all(&data).unwrap();
                let (out, sizes) = writer.finish().unwrap();
                assert_eq!(sizes.input_bytes, data.len() as u64, "{compression}");
                assert_eq!(sizes.output_bytes, out.len() as u64, "{compression}");
                let mut back = Vec::new();
                match compression {
                    Compression::Gzip { .. } => {
                        flate2::read::GzDecoder::new(&out[..])
                            .read_to_end(&mut back)
                            .unwrap();
                    }
                    Compression::Zstd { .. } => {
                        back = zstd::stream::decode_all(&out[..]).unwrap();
                        // One frame, as a puller that reads a single frame expects.
                        assert_eq!(
                            zstd::zstd_safe::find_frame_compressed_size(&out),
                            Ok(out.len())
                        );
                    }
                }
                assert_eq!(back, data, "{compression}");
            }
        }
    }

    /// Levels are checked against each compression's range, and the defaults apply.
    #[test]
    fn levels_follow_each_compression() {
        assert_eq!(
            Compression::new("gzip", None),
            Ok(Compression::Gzip {
                level: gzip::DEFAULT_LEVEL
            })
        );
        assert_eq!(
            Compression::new("zstd", Some(19)),
            Ok(Compression::Zstd { level: 19 })
        );
        assert!(Compression::new("gzip", Some(10))
            .unwrap_err()
            .contains("1 to 9"));
        assert!(Compression::new("zstd", Some(0)).is_err());
        assert!(Compression::new("brotli", None)
            .unwrap_err()
            .contains("gzip, zstd"));
    }

    /// A zstd layer makes the manifest OCI, whatever the push's own compression; gzip
    /// layers are named in the format's own vocabulary.
    #[test]
    fn the_manifest_format_follows_the_layers() {
        let gzip = Compression::default();
        let zstd = Compression::new("zstd", None).unwrap();
        assert_eq!(
            ManifestFormat::for_layers(gzip, [LayerCodec::Gzip]),
            ManifestFormat::Docker
        );
        assert_eq!(ManifestFormat::for_layers(zstd, []), ManifestFormat::Oci);
        assert_eq!(
            ManifestFormat::for_layers(gzip, [LayerCodec::Zstd]),
            ManifestFormat::Oci
        );
        assert_eq!(
            ManifestFormat::Oci.layer_media_type(LayerCodec::of(DOCKER_GZIP_LAYER).unwrap()),
            OCI_GZIP_LAYER
        );
        assert!(!gzip.takes_layer(OCI_ZSTD_LAYER));
        assert!(zstd.takes_layer(DOCKER_GZIP_LAYER));
    }
}
