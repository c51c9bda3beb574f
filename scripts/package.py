"""Build what a cluster needs into dist/: shoprec.zip for --py-files, the job entry files, the conf."""

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dist", default=str(PROJECT / "dist"), help="output directory (default: dist/)")
    dist = Path(parser.parse_args(argv).dist)
    shutil.rmtree(dist, ignore_errors=True)
    (dist / "jobs").mkdir(parents=True)
    (dist / "conf").mkdir()
    with zipfile.ZipFile(dist / "shoprec.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((PROJECT / "lib").rglob("*.py")):
            archive.write(path, path.relative_to(PROJECT / "lib"))
    for job in sorted((PROJECT / "jobs").glob("*.py")):
        shutil.copy(job, dist / "jobs" / job.name)
    for conf in sorted((PROJECT / "conf").glob("*.yaml")):
        shutil.copy(conf, dist / "conf" / conf.name)
    print(f"dist/shoprec.zip, dist/jobs/, dist/conf/ ready ({dist})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
