"""Generate the Python code for remotecell/_proto/remotecell.proto.

python scripts/gen_proto.py          # write remotecell/_proto/remotecell_pb2*.py(i)
python scripts/gen_proto.py --check  # exit 1 if the committed files are not current
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "remotecell" / "_proto"
GENERATED = ["remotecell_pb2.py", "remotecell_pb2.pyi", "remotecell_pb2_grpc.py"]


def generate(out: Path) -> None:
    # Generated into a tree that mirrors the package so the imports come out as
    # `from remotecell._proto import remotecell_pb2`.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "remotecell" / "_proto"
        src.mkdir(parents=True)
        shutil.copy(PROTO_DIR / "remotecell.proto", src / "remotecell.proto")
        args = [
            "protoc",
            f"-I{tmp}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            "remotecell/_proto/remotecell.proto",
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for name in GENERATED:
            shutil.copy(src / name, out / name)


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = [
                n
                for n in GENERATED
                if not (PROTO_DIR / n).exists()
                or not filecmp.cmp(Path(tmp) / n, PROTO_DIR / n, shallow=False)
            ]
        if stale:
            print(f"generated code is stale: {', '.join(stale)}; run python scripts/gen_proto.py")
            return 1
        print("generated code is current")
        return 0
    generate(PROTO_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
