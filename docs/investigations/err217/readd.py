"""libtorrent #6394 shape: a hybrid torrent partly downloaded, removed without resume data (as a SIGKILL
leaves it, or a pull that re-adds its torrent), added again (full check of the partial files), then the peer
and add_piece finish it. Also: the re-add happens while writes of the first instance may still be queued.

usage: python readd.py ROUNDS [SEED]
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import libtorrent as lt

sys.path.insert(0, "/tmp/err217")
from race import SIZES, add, make, piece_bytes, session  # noqa: E402


def main() -> None:
    rounds = int(sys.argv[1])
    rnd = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    work = Path(tempfile.mkdtemp(prefix="readd-", dir="/tmp/err217"))
    src = work / "src"
    src.mkdir()
    tbytes = make(src)
    ti = lt.torrent_info(tbytes)
    data = {i: piece_bytes(ti, src, i) for i in range(ti.num_pieces())}
    limit = int(os.environ.get("SEED_RATE", "3000000"))
    seeder = session({"upload_rate_limit": limit})
    pc = seeder.get_peer_class(lt.session.local_peer_class_id)
    pc["upload_limit"] = limit
    seeder.set_peer_class(lt.session.local_peer_class_id, pc)
    add(seeder, tbytes, src, seed=True)
    fails = 0
    for r in range(rounds):
        dst = work / f"dl{r}"
        dl = session()
        h = add(dl, tbytes, dst)
        time.sleep(0.05)
        h.connect_peer(("127.0.0.1", seeder.listen_port()))
        target = rnd.randrange(200_000, 3_000_000)
        t0 = time.monotonic()
        while h.status().total_payload_download < target and time.monotonic() - t0 < 10:
            time.sleep(0.005)
        # some origin pieces too, then drop the torrent mid-flight (no flush, no resume data)
        for p in rnd.sample(range(ti.num_pieces()), 3):
            h.add_piece(p, data[p], 0)
        if rnd.random() < 0.5:
            dl.remove_torrent(h)
        else:
            del h
            del dl  # the whole session goes (closest to a kill in-process)
            dl = session()
        time.sleep(rnd.uniform(0, 0.05))
        h = add(dl, tbytes, dst)  # no resume data: libtorrent checks what is on disk
        errors, hf = [], 0
        t0 = time.monotonic()
        while h.status().state != lt.torrent_status.downloading and not h.status().is_seeding and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        have = sum(h.status().pieces)
        h.connect_peer(("127.0.0.1", seeder.listen_port()))
        order = [p for p in range(ti.num_pieces()) if not h.have_piece(p)]
        rnd.shuffle(order)
        for p in order:
            h.add_piece(p, data[p], 0)
            time.sleep(rnd.uniform(0, 0.1))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:
            for a in dl.pop_alerts():
                if isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                    errors.append(a.message())
                elif isinstance(a, lt.hash_failed_alert):
                    hf += 1
            st = h.status()
            if st.is_seeding or errors or st.errc.value():
                break
            time.sleep(0.02)
        st = h.status()
        if st.errc.value() and not errors:
            errors.append(st.errc.message())
        bad = bool(errors) or not st.is_seeding
        fails += bad
        print(f"round {r}: had {have} after check; errors={errors} hash_failed={hf} seeding={st.is_seeding}", flush=True)
        dl.remove_torrent(h)
        del dl
        shutil.rmtree(dst, ignore_errors=True)
    print(f"readd: {fails}/{rounds} rounds failed")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
