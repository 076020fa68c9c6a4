"""Error 217 hunt: a hybrid torrent, one seeding session, one downloading session on loopback; the
downloader also add_piece()s pieces that the peer is delivering at the same time.

usage: python race.py MODE ROUNDS [SEED]
MODE:
  race     add_piece every piece in random order with random small delays while the peer sends
  partial  add_piece exactly the pieces that have blocks in flight / received from the peer (download queue)
  twice    add_piece each piece twice in a row (and again later)
  lastpad  add_piece only the last piece of each file (pad tail), racing the peer
  killpeer peer session torn down mid-transfer, then add_piece every missing piece (the cluster fault)
Prints per round: errors (217 or other), hash failures, finished, data correct.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import libtorrent as lt

sys.path.insert(0, "/work/main/src")
from swarmhub.engine.session import settings_for  # noqa: E402  (same settings as the node's engine)

PIECE = 256 * 1024
SIZES = {"a/model-00001.bin": 3 * 1024 * 1024 + 12345, "a/model-00002.bin": 1024 * 1024 + 777, "b.json": 70_001}


EXTRA: list = []


def make(root: Path) -> bytes:
    rnd = random.Random(1)
    for rel, size in SIZES.items():
        p = root / "rel" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd.randbytes(size))
    fs = lt.file_storage()
    lt.add_files(fs, str(root / "rel"))
    ct = lt.create_torrent(fs, PIECE)  # hybrid (v1+v2) by default, pad files
    lt.set_piece_hashes(ct, str(root))
    return lt.bencode(ct.generate())


def piece_bytes(ti, root: Path, piece: int) -> bytes:
    """The piece as libtorrent lays it out (pads are zeros)."""
    fs = ti.files()
    out = bytearray(ti.piece_size(piece))
    for sl in ti.map_block(piece, 0, ti.piece_size(piece)):
        if fs.file_flags(sl.file_index) & lt.file_storage.flag_pad_file:
            continue
        at = sum(s.size for s in ti.map_block(piece, 0, ti.piece_size(piece)) if s.file_index < sl.file_index)
        with open(root / fs.file_path(sl.file_index), "rb") as f:
            f.seek(sl.offset)
            out[at : at + sl.size] = f.read(sl.size)
    return bytes(out)


def session(extra: dict | None = None) -> lt.session:
    s = settings_for("isolated", "127.0.0.1:0", None)
    s["alert_mask"] = lt.alert_category.all & ~lt.alert_category.peer_log & ~lt.alert_category.torrent_log & ~lt.alert_category.block_progress
    s.update(extra or {})
    return lt.session(s)


def add(ses, tbytes: bytes, save: Path, seed=False):
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(tbytes)
    p.save_path = str(save)
    p.flags &= ~(lt.torrent_flags.paused | lt.torrent_flags.auto_managed)
    if seed:
        p.flags |= lt.torrent_flags.seed_mode
    return ses.add_torrent(p)


def one_round(mode: str, tbytes: bytes, src: Path, work: Path, rnd: random.Random, seeder, sh) -> dict:
    ti = lt.torrent_info(tbytes)
    n = ti.num_pieces()
    data = {i: piece_bytes(ti, src, i) for i in range(n)}
    dl = session({"max_queued_disk_bytes": int(os.environ.get("DL_QUEUE", str(16 << 20)))})
    dst = work / f"dl{rnd.randrange(1 << 30)}"
    h = add(dl, tbytes, dst)
    out = {"errors": [], "hash_failed": 0, "finished": set(), "ok": None}

    def drain():
        for a in dl.pop_alerts():
            if isinstance(a, lt.torrent_error_alert):
                out["errors"].append(f"{a.error.value()} {a.error.message()} file={a.filename()}")
            elif isinstance(a, lt.file_error_alert):
                out["errors"].append(f"file_error {a.error.value()} {a.error.message()}")
            elif isinstance(a, lt.hash_failed_alert):
                out["hash_failed"] += 1
            elif isinstance(a, lt.piece_finished_alert):
                out["finished"].add(int(a.piece_index))

    deadline = time.monotonic() + 10
    while h.status().state not in (lt.torrent_status.downloading, lt.torrent_status.seeding) and time.monotonic() < deadline:
        time.sleep(0.01)
    h.connect_peer(("127.0.0.1", seeder.listen_port()))
    for other in EXTRA:
        h.connect_peer(("127.0.0.1", other.listen_port()))
    order = list(range(n))
    rnd.shuffle(order)
    if mode == "lastpad":
        last = set()
        fs = ti.files()
        for i in range(fs.num_files()):
            if not fs.file_flags(i) & lt.file_storage.flag_pad_file and fs.file_size(i):
                last.add(ti.map_file(i, fs.file_size(i) - 1, 1).piece)
        order = [p for p in order if p in last]
    t0 = time.monotonic()
    if mode == "killpeer":
        # wait till some pieces have blocks from the peer, then kill the peer's side abruptly
        while time.monotonic() - t0 < 5 and h.status().total_payload_download < rnd.randrange(1, 3 << 20):
            drain()
            time.sleep(0.002)
        seeder.remove_torrent(sh)  # the peer vanishes mid-piece
        for p in order:
            if not h.have_piece(p):
                h.add_piece(p, data[p], 0)
    else:
        # wait for the first block from the peer so the two writers overlap
        while time.monotonic() - t0 < 5 and not h.get_download_queue():
            time.sleep(0.002)
        for p in order:
            if mode == "partial":
                q = {int(d["piece_index"]) for d in h.get_download_queue()}
                if p not in q and rnd.random() < 0.7:
                    continue
            h.add_piece(p, data[p], 0)
            if mode == "twice":
                h.add_piece(p, data[p], 0)
            time.sleep(rnd.uniform(0, float(os.environ.get('ADD_GAP', '0.15'))))
            drain()
        if mode == "twice":
            for p in order:
                h.add_piece(p, data[p], 0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        drain()
        st = h.status()
        if st.is_seeding or out["errors"] or st.errc.value():
            break
        if mode in ("partial", "lastpad") and time.monotonic() - t0 > 0.5:
            pass
        time.sleep(0.02)
    drain()
    st = h.status()
    if st.errc.value() and not out["errors"]:
        out["errors"].append(f"status {st.errc.value()} {st.errc.message()}")
    out["seeding"] = bool(st.is_seeding)
    if st.is_seeding:
        h.flush_cache()
        time.sleep(0.2)
        out["ok"] = all(
            hashlib.sha256((dst / "rel" / r).read_bytes()).digest() == hashlib.sha256((src / "rel" / r).read_bytes()).digest()
            for r in SIZES
        )
    out["peer_bytes"] = st.total_payload_download
    dl.remove_torrent(h)
    del dl
    shutil.rmtree(dst, ignore_errors=True)
    return out


def main() -> None:
    mode, rounds = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    work = Path(tempfile.mkdtemp(prefix="r217-", dir="/tmp/err217"))
    src = work / "src"
    src.mkdir()
    tbytes = make(src)
    rnd = random.Random(seed)
    limit = int(os.environ.get("SEED_RATE", "3000000"))
    seeder = session({"upload_rate_limit": limit})
    # loopback peers are in the local peer class, which rate limits skip: limit that class too
    pc = seeder.get_peer_class(lt.session.local_peer_class_id)
    pc["upload_limit"] = limit
    seeder.set_peer_class(lt.session.local_peer_class_id, pc)
    sh = add(seeder, tbytes, src, seed=True)
    for _ in range(int(os.environ.get("NSEEDERS", "1")) - 1):
        o = session({"upload_rate_limit": limit})
        o.set_peer_class(lt.session.local_peer_class_id, pc)
        add(o, tbytes, src, seed=True)
        EXTRA.append(o)
    fails = 0
    for r in range(rounds):
        if mode == "killpeer" and not sh.is_valid():
            sh = add(seeder, tbytes, src, seed=True)
        elif mode == "killpeer":
            pass
        res = one_round(mode, tbytes, src, work, rnd, seeder, sh)
        if mode == "killpeer":
            sh = add(seeder, tbytes, src, seed=True)
        bad = bool(res["errors"]) or res["ok"] is False or not res["seeding"]
        fails += bad
        print(
            f"round {r}: errors={res['errors']} hash_failed={res['hash_failed']} seeding={res['seeding']} "
            f"data_ok={res['ok']} peer_bytes={res['peer_bytes']}",
            flush=True,
        )
    print(f"{mode}: {fails}/{rounds} rounds failed")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
