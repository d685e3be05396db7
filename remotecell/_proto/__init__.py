"""Generated gRPC code for remotecell.proto (see scripts/gen_proto.py)."""

from remotecell._proto import remotecell_pb2 as pb
from remotecell._proto import remotecell_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
