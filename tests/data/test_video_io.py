"""Video reading: frame-exact picks at a non-30 fps, one seek per file, chunked layout, short clips, bad inputs."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest

from egovlp.data.video_io import (
    DEFAULT_CHUNK_SECONDS,
    probe,
    read_chunks_file,
    read_clip,
    read_frames_at,
    read_video_clip,
    resolve_chunk_seconds,
    write_chunks_file,
)
from egovlp.errors import DataError, VideoReadError

from .conftest import INDEX_FPS, decode_index

FPS = float(INDEX_FPS)


def indices(frames: np.ndarray) -> list[int]:
    return [decode_index(f) for f in frames]


def test_probe_reports_real_frame_rate(index_video):
    info = probe(index_video)
    assert info.fps == pytest.approx(12.5)
    assert info.duration == pytest.approx(8.0)
    assert (info.width, info.height) == (80, 48)


def test_frames_are_picked_by_presentation_time(index_video):
    wanted = [0, 1, 7, 8, 33, 34, 50, 99]
    frames = read_frames_at(index_video, [(i + 0.5) / FPS for i in wanted])  # frame middles
    assert frames.shape == (len(wanted), 48, 80, 3) and frames.dtype == np.uint8
    assert indices(frames) == wanted
    # A time exactly on a frame's start shows that frame; just before it, the previous one.
    assert indices(read_frames_at(index_video, [40 / FPS, 40 / FPS - 1e-3])) == [40, 39]


def test_unsorted_and_repeated_times_keep_their_order(index_video):
    wanted = [60, 3, 60, 3, 95]
    assert indices(read_frames_at(index_video, [(i + 0.5) / FPS for i in wanted])) == wanted


class _SeekCounter:
    """Wraps av.open to count seeks on the returned containers."""

    def __init__(self):
        self.seeks, self.opens = 0, 0
        self._open = av.open

    def __call__(self, *args, **kwargs):
        self.opens += 1
        container, counter = self._open(*args, **kwargs), self

        class Proxy:
            def __getattr__(self, name):
                return getattr(container, name)

            def seek(self, *a, **k):
                counter.seeks += 1
                return container.seek(*a, **k)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                container.close()

        return Proxy()


def test_one_open_and_one_seek_per_file(index_video, monkeypatch):
    counter = _SeekCounter()
    monkeypatch.setattr(av, "open", counter)
    wanted = [41, 47, 52, 58, 63, 69, 74, 80]
    assert indices(read_frames_at(index_video, [(i + 0.5) / FPS for i in wanted])) == wanted
    assert (counter.opens, counter.seeks) == (1, 1)


def test_read_video_clip_samples_segments(index_video):
    clip = read_video_clip(index_video, 2.0, 4.0, 4, "uniform")  # frames 25..49: segment middles
    assert indices(clip) == [int(t * FPS) for t in (2.25, 2.75, 3.25, 3.75)]
    rand = read_video_clip(index_video, 2.0, 4.0, 4, "rand", np.random.default_rng(0))
    got = indices(rand)
    assert got == sorted(got) and all(25 + 6 * k <= got[k] <= 25 + 6 * (k + 1) for k in range(4))


def test_clip_across_two_chunks(chunked_index_video):
    root, uid, chunk_seconds, _ = chunked_index_video
    # 3.0-5.0 s spans chunk 0 (frames 0-49) and chunk 1 (50-99); middles at 3.25, 3.75, 4.25, 4.75 s.
    clip = read_clip(root, uid, 3.0, 5.0, 4, "uniform", chunk_seconds)
    assert indices(clip) == [int(t * FPS) for t in (3.25, 3.75, 4.25, 4.75)]
    tail = read_clip(root, uid, 9.5, 10.3, 2, "uniform", chunk_seconds)  # into the short last chunk (100-129)
    assert indices(tail) == [int(t * FPS) for t in (9.7, 10.1)]


def test_short_clip_repeats_frames(chunked_index_video):
    root, uid, chunk_seconds, _ = chunked_index_video
    clip = read_clip(root, uid, 1.0, 1.1, 8, "uniform", chunk_seconds)  # 0.1 s: about one frame
    assert clip.shape[0] == 8 and set(indices(clip)) <= {12, 13}
    still = read_clip(root, uid, 2.0, 2.0, 4, "rand", chunk_seconds, np.random.default_rng(0))
    assert indices(still) == [25] * 4


def test_end_tolerance_shows_last_frame(chunked_index_video):
    root, uid, chunk_seconds, total = chunked_index_video
    end = total / FPS  # 10.4 s: one past the last frame's start
    assert indices(read_clip(root, uid, end - 0.2, end + 0.2, 2, "uniform", chunk_seconds)) == [total - 2, total - 1]


def test_missing_file_names_file_and_range(tmp_path, chunked_index_video):
    root, _uid, chunk_seconds, _ = chunked_index_video
    with pytest.raises(VideoReadError, match=r"missing\.mp4: no such video file \(wanted 1\.000-2\.000 s"):
        read_frames_at(tmp_path / "missing.mp4", [1.0, 2.0])
    with pytest.raises(VideoReadError, match=r"other/0\.mp4: no such video file.*clip other 0\.500-1\.500 s"):
        read_clip(root, "other", 0.5, 1.5, 2, "uniform", chunk_seconds)


def test_undecodable_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match=r"bad\.mp4: cannot open video.*wanted 0\.500-0\.500 s"):
        read_frames_at(bad, [0.5])


def test_truncated_file(tmp_path, index_video):
    data = index_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: the header is gone
    with pytest.raises(VideoReadError, match=r"cut\.mp4: cannot open video, truncated"):
        read_frames_at(cut, [1.0])


def test_truncated_media_data(tmp_path, index_video):
    """Header intact (moved to the front) but the media data cut: decoding stops early."""
    fast = tmp_path / "fast.mp4"
    with (
        av.open(str(index_video)) as src,
        av.open(str(fast), "w", format="mp4", options={"movflags": "faststart"}) as dst,
    ):
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = fast.read_bytes()
    cut = tmp_path / "cut_media.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoReadError, match=r"cut_media\.mp4: (file is truncated|decoding failed).*7\.500-7\.500 s"):
        read_frames_at(cut, [7.5])


def test_time_beyond_the_end(index_video):
    with pytest.raises(VideoReadError, match=r"index\.mp4: time range is beyond the end.*wanted 1\.000-20\.000 s"):
        read_frames_at(index_video, [1.0, 20.0])


def test_chunk_missing_in_the_middle(tmp_path, chunked_index_video):
    root, uid, chunk_seconds, _ = chunked_index_video
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    (copy / uid / "1.mp4").unlink()
    with pytest.raises(VideoReadError, match=r"vid-0/1\.mp4: no such video file.*clip vid-0 3\.000-5\.000 s"):
        read_clip(copy, uid, 3.0, 5.0, 4, "uniform", chunk_seconds)


def _copy_layout(root, tmp_path, chunk_seconds=None):
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    if chunk_seconds is not None:
        (copy / "chunks.json").write_text(json.dumps({"chunk_seconds": chunk_seconds}))
    return copy


def test_chunk_seconds_auto_reads_chunks_json(tmp_path, chunked_index_video):
    root, uid, chunk_seconds, _ = chunked_index_video
    copy = _copy_layout(root, tmp_path, chunk_seconds)
    assert resolve_chunk_seconds(copy, 0) == resolve_chunk_seconds(copy, -1) == 4.0
    assert resolve_chunk_seconds(copy, 4.0) == 4.0
    assert indices(read_clip(copy, uid, 3.0, 5.0, 4, "uniform", 0)) == [int(t * FPS) for t in (3.25, 3.75, 4.25, 4.75)]
    assert resolve_chunk_seconds(tmp_path / "no-such-root", 0) == DEFAULT_CHUNK_SECONDS == 600.0
    write_chunks_file(copy, 8.0)  # a new version of the file is read again (cached per modification time)
    assert read_chunks_file(copy) == 8.0


def test_configured_chunk_seconds_that_disagrees_with_chunks_json(tmp_path, chunked_index_video):
    root, uid, _, _ = chunked_index_video
    copy = _copy_layout(root, tmp_path, 4.0)
    with pytest.raises(VideoReadError, match=r"chunk length looks wrong: chunk_seconds=600 is configured but .*"
                       r"chunks\.json says the videos were cut into 4 s chunks"):  # fmt: skip
        read_clip(copy, uid, 3.0, 5.0, 2, "uniform", 600.0)


@pytest.mark.parametrize("bad", ['{"chunk_seconds": 0}', '{"chunk": 30}', "not json", '{"chunk_seconds": "30"}'])
def test_malformed_chunks_json(tmp_path, bad):
    (tmp_path / "chunks.json").write_text(bad)
    with pytest.raises(DataError, match=r"chunks\.json: "):
        resolve_chunk_seconds(tmp_path, 0)


def test_chunk_seconds_too_long_is_diagnosed(tmp_path, chunked_index_video):
    """4 s chunks read as 600 s ones (the default without chunks.json): 5 s falls past the end of chunk 0."""
    root, uid, _, _ = chunked_index_video
    copy = _copy_layout(root, tmp_path)
    for configured in (0, 8.0):
        with pytest.raises(VideoReadError, match=r"vid-0/0\.mp4: the chunk length looks wrong: this chunk lasts "
                           rf"4\.000 s, much less than chunk_seconds={600 if configured == 0 else 8}, but the next "
                           r"chunk 1\.mp4 exists"):  # fmt: skip
            read_clip(copy, uid, 5.0, 6.0, 2, "uniform", configured)
    # The last chunk is short by nature: past its end is "beyond the end", not a wrong chunk length.
    with pytest.raises(VideoReadError, match=r"vid-0/2\.mp4: time range is beyond the end"):
        read_clip(copy, uid, 11.0, 12.0, 2, "uniform", 4.0)


def test_chunk_seconds_too_short_is_diagnosed(tmp_path, chunked_index_video):
    """4 s chunks read as 2 s ones would silently show frames of the wrong time: the chunk's length gives it away."""
    root, uid, _, _ = chunked_index_video
    copy = _copy_layout(root, tmp_path)
    with pytest.raises(VideoReadError, match=r"vid-0/1\.mp4: the chunk length looks wrong: this chunk lasts 4\.000 s "
                       r"but chunk_seconds is 2"):  # fmt: skip
        read_clip(copy, uid, 2.5, 3.5, 2, "uniform", 2.0)
