"""Piece arithmetic: every byte of every file lands in exactly the pieces the plan says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarmhub.bt.layout import auto_piece_size, path_sort_key, plan_torrent, valid_piece_size

sizes = st.lists(st.integers(min_value=0, max_value=200_000), min_size=1, max_size=8)
formats = st.sampled_from(["hybrid", "v1", "v2"])
pieces = st.sampled_from([16384, 32768, 65536])


def _plan(size_list: list[int], piece: int, fmt: str):  # type: ignore[no-untyped-def]
    return plan_torrent([(f"d/f{i:02}", s) for i, s in enumerate(size_list)], piece, fmt)  # type: ignore[arg-type]


@given(sizes, pieces, formats)
def test_files_are_contiguous_and_aligned(size_list: list[int], piece: int, fmt: str) -> None:
    plan = _plan(size_list, piece, fmt)
    offset = 0
    for f in plan.files:
        assert f.offset == offset
        if fmt != "v1":
            assert f.offset % piece == 0
        offset = f.end + f.pad_after + (0 if fmt != "v2" or f.size % piece == 0 else piece - f.size % piece)
    assert plan.total_size == sum(size_list)


@given(sizes, pieces, formats, st.sampled_from([1, 2, 3]))
def test_chunks_cover_each_file_exactly_once(size_list: list[int], piece: int, fmt: str, mult: int) -> None:
    plan = _plan(size_list, piece, fmt)
    covered: dict[int, int] = {}
    for chunk in plan.chunks(piece * mult):
        assert chunk.file_offset == covered.get(chunk.file.index, 0)
        assert chunk.length > 0
        # a chunk never crosses a chunk-size boundary of the stream
        assert chunk.stream_offset // (piece * mult) == (chunk.stream_offset + chunk.length - 1) // (piece * mult)
        covered[chunk.file.index] = chunk.file_offset + chunk.length
    assert all(covered.get(f.index, 0) == f.size for f in plan.files)


@given(sizes, pieces)
def test_v1_piece_count_and_file_pieces(size_list: list[int], piece: int) -> None:
    plan = _plan(size_list, piece, "v1")
    assert plan.num_pieces == -(-sum(size_list) // piece)
    assert sum(plan.piece_length(i) for i in range(plan.num_pieces)) == sum(size_list)
    for f in plan.files:
        r = plan.file_pieces(f)
        if f.size:
            assert r.start * piece <= f.offset < (r.start + 1) * piece
            assert (r.stop - 1) * piece < f.end <= r.stop * piece


def test_sort_is_per_path_component() -> None:
    paths = ["vae.json", "vae/x.bin", "vae-ft.bin", "a/b/c", "a.txt"]
    assert sorted(paths, key=path_sort_key) == ["a/b/c", "a.txt", "vae/x.bin", "vae-ft.bin", "vae.json"]


def test_auto_piece_size_keeps_big_torrents_small() -> None:
    assert auto_piece_size(0) == 256 * 1024
    assert auto_piece_size(5 * 10**8) == 256 * 1024
    assert auto_piece_size(2 * 10**9) == 1024 * 1024
    for total in (10**9, 10**10, 10**11, 5 * 10**11, 2 * 10**12):
        piece = auto_piece_size(total)
        assert valid_piece_size(piece)
        count = -(-total // piece)
        # 20 B (v1) + 32 B (v2 layer) per piece: a hybrid of a 500 GB repo stays near 2 MB
        assert count * 52 <= 2_100_000, (total, piece, count)
    assert auto_piece_size(5 * 10**11) > 8 * 1024 * 1024  # beyond libtorrent's 8 MiB cap
