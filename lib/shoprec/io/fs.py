"""File-system operations through Hadoop's FileSystem API, so local paths, hdfs:// and s3a:// behave alike."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession


@dataclass(frozen=True)
class FileStatus:
    """One data file: its fully qualified path, size in bytes and modification time (ms since epoch)."""

    path: str
    size: int
    modified_ms: int


def is_hidden(name: str) -> bool:
    """Spark's rule: names starting with ``_`` or ``.`` are metadata, not data."""
    return name.startswith(("_", "."))


class HadoopFS:
    """A thin wrapper over ``org.apache.hadoop.fs.FileSystem`` for one SparkSession."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str):
        return self._path(path).getFileSystem(self._hadoop_conf)

    def uri(self, path: str) -> str:
        """The URI-encoded form of ``path``, as Spark reports it in ``_metadata.file_path``."""
        return self._path(path).toUri().toString()

    def exists(self, path: str) -> bool:
        return bool(self._fs(path).exists(self._path(path)))

    def is_dir(self, path: str) -> bool:
        fs = self._fs(path)
        p = self._path(path)
        return bool(fs.exists(p) and fs.getFileStatus(p).isDirectory())

    def delete(self, path: str) -> None:
        fs = self._fs(path)
        p = self._path(path)
        if fs.exists(p):
            fs.delete(p, True)

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, creating ``dst``'s parent; raises if the file system refuses."""
        fs = self._fs(src)
        dst_path = self._path(dst)
        fs.mkdirs(dst_path.getParent())
        if not fs.rename(self._path(src), dst_path):
            raise OSError(f"could not rename {src} to {dst}")

    def list_dir(self, path: str) -> list[str]:
        """Names of the direct children of ``path`` (empty if it does not exist)."""
        fs = self._fs(path)
        p = self._path(path)
        if not fs.exists(p):
            return []
        return sorted(status.getPath().getName() for status in fs.listStatus(p))

    def list_files(self, path: str) -> list[FileStatus]:
        """Every data file under ``path`` (or ``path`` itself if it is a file), skipping hidden names."""
        fs = self._fs(path)
        root = self._path(path)
        if not fs.exists(root):
            return []
        status = fs.getFileStatus(root)
        if status.isFile():
            return [FileStatus(status.getPath().toString(), status.getLen(), status.getModificationTime())]
        found: list[FileStatus] = []
        pending = [root]
        while pending:
            for child in fs.listStatus(pending.pop()):
                name = child.getPath().getName()
                if is_hidden(name):
                    continue
                if child.isDirectory():
                    pending.append(child.getPath())
                else:
                    found.append(FileStatus(child.getPath().toString(), child.getLen(), child.getModificationTime()))
        return sorted(found, key=lambda f: f.path)

    def leaf_dirs(self, path: str, depth: int) -> list[str]:
        """Relative paths of the directories exactly ``depth`` levels below ``path`` (partition dirs)."""
        levels = [""]
        for _ in range(depth):
            levels = [
                f"{rel}/{name}" if rel else name
                for rel in levels
                for name in self.list_dir(f"{path}/{rel}" if rel else path)
                if not is_hidden(name) and self.is_dir(f"{path}/{rel}/{name}" if rel else f"{path}/{name}")
            ]
        return levels

    def write_text(self, path: str, text: str) -> None:
        """Write a small UTF-8 file in one go, replacing any existing one."""
        out = self._fs(path).create(self._path(path), True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def read_text(self, path: str) -> str:
        """Read a small UTF-8 file whole."""
        stream = self._fs(path).open(self._path(path))
        try:
            buffer = self._jvm.java.io.ByteArrayOutputStream()
            self._jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, 65536, False)
            return bytes(buffer.toByteArray()).decode("utf-8")
        finally:
            stream.close()
