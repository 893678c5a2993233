"""Types of the C module floodguard.sip._index (see _index.c)."""

def index_message(
    data: bytes, stream: bool, /
) -> tuple[
    dict[bytes, bytes], dict[bytes, list[bytes]] | None, str | None, str | None, int | None,
    str | None, int | None, str | None, int | None, bytes, int,
] | None: ...
def auth_params(value: bytes, /) -> list[tuple[str, dict[str, str]]] | None: ...
