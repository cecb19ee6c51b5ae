"""TFRecord files read in a Beam pipeline in memory that does not grow with the files.

Beam's own ReadFromTFRecord (2.65) decompresses a gzipped file through CompressedFile with
its default read size, 16 MiB: each read takes up to 16 MiB of compressed bytes and keeps all
they decompress to in one in-memory buffer until the records in it are consumed. A shard of
up to 16 MiB compressed is thus held whole, decompressed (and copied once when the buffer is
compacted): with ExampleGen's fixed number of shards, peak memory grows with the split. At a
million digits examples in 8 shards (13.6 MiB compressed each, ~150 MB decompressed) the
evaluator's pass peaked ~300 MB above its 100,000-example run (BENCHMARKS.md, section 8).

ReadRecords reads the same files through the same Beam filesystems (local, s3:// with the
pipeline's S3 options, gs://), with the same record framing and checksum checks (Beam's
TFRecord reader, `_TFRecordUtil.read_record`, a private helper pinned with apache-beam in
constraints.txt), and a fixed READ_SIZE of compressed bytes per read: the buffer holds at
most what READ_SIZE decompresses to, whatever the file's size. Files are matched and
spread over workers with beam.io.fileio (MatchFiles, ReadMatches' reshuffle); a gzipped file
cannot be split, so one worker reads it, as before.
"""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressedFile, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

READ_SIZE = 64 * 1024  # compressed bytes per read: at gzip's worst ratio (~1,000:1) a 64 MB buffer


def read_file(path: str, read_size: int = READ_SIZE) -> Iterator[bytes]:
    """The serialized records of one TFRecord file (compression from its extension: .gz,
    .bz2, .zst, ..., as Beam's AUTO), in order. A ValueError (Beam's) on a corrupt or
    truncated record."""
    compression = CompressionTypes.detect_compression_type(path)
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    stream = raw if compression == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression, read_size)
    try:
        while True:
            record = _TFRecordUtil.read_record(stream)
            if record is None:
                return
            yield record
    finally:
        stream.close()


class ReadRecords(beam.PTransform):
    """PBegin -> PCollection[bytes]: every record of every file matching `pattern` (as
    ReadFromTFRecord(pattern, coder=BytesCoder(), compression_type=AUTO) gives them), read
    with a fixed-size buffer (read_file)."""

    def __init__(self, pattern: str, read_size: int = READ_SIZE):
        super().__init__()
        self._pattern, self._read_size = pattern, read_size

    def expand(self, pbegin):
        read_size = self._read_size
        return (pbegin
                | "Match" >> fileio.MatchFiles(self._pattern)
                | "Spread" >> fileio.ReadMatches()
                | "Records" >> beam.FlatMap(lambda f: read_file(f.metadata.path, read_size)))
