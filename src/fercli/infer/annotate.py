"""`fer annotate`: photos and videos with every face boxed and labelled, plus the CSV of what was drawn.

Each face gets a box drawn black-white-black (visible on any background and in grayscale print), and a
panel of white with black text: the emotion with its probability, then bars for the three likeliest
classes (the first filled black, the others grey), so a glance reads the answer and its confidence.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fercli import console
from fercli.console import plural
from fercli.data.imagefaces import VIDEO_EXTENSIONS, ImageFaces, is_video
from fercli.defaults import VIDEO_SMOOTH
from fercli.errors import USAGE, FerError
from fercli.files.atomic import atomic_path
from fercli.photos.detect import Box

if TYPE_CHECKING:
    from fercli.infer.model import Face, FerModel

BARS = 3  # classes with a bar under each face's label
RowWriter = Callable[[list[str], np.ndarray], str]  # (row prefixes, probabilities [n,classes]) -> CSV lines


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _line_height(font: Any) -> int:
    return int(font.getbbox("Ag")[3]) + 4


def draw_faces(img: Image.Image, faces: list[tuple[Box, np.ndarray]], classes: tuple[str, ...]) -> None:
    """Draw each (box, class probabilities) onto the RGB image, in place."""
    draw = ImageDraw.Draw(img)
    width, height = img.size
    line = max(1, round(min(width, height) / 300))
    for box, p in faces:
        x0, y0, x1, y1 = box.x, box.y, box.x + box.w - 1, box.y + box.h - 1
        for grow, colour in ((2 * line, "black"), (line, "white"), (0, "black")):
            draw.rectangle([x0 - grow, y0 - grow, x1 + grow, y1 + grow], outline=colour, width=line)
        size = int(np.clip(box.w / 8, 11, 32))
        font, small = _font(size), _font(max(9, size * 3 // 4))
        order = np.argsort(-p)[:BARS]
        title = f"{classes[order[0]]} {p[order[0]]:.0%}"
        pw = max(box.w, int(draw.textlength(title, font=font)) + 2 * line + 8, 9 * size)  # room for bars
        step = _line_height(small)
        rows = size + 6 + len(order) * step
        px = int(np.clip(x0, 0, max(0, width - pw)))
        py = y1 + 3 * line + 2 if y1 + 3 * line + 2 + rows <= height else max(0, y0 - 3 * line - 2 - rows)
        draw.rectangle([px, py, px + pw, py + rows], fill="white", outline="black", width=line)
        draw.text((px + 4, py + 2), title, fill="black", font=font)
        y = py + size + 6
        for rank, k in enumerate(order):
            label = f"{classes[k]} {p[k]:.0%}"
            draw.text((px + 4, y), label, fill="black", font=small)
            bx0 = px + 4 + int(draw.textlength(label, font=small)) + 6
            bx1 = px + pw - 4
            if bx1 > bx0:
                fill = "black" if rank == 0 else (150, 150, 150)
                draw.rectangle([bx0, y + 2, bx0 + int((bx1 - bx0) * float(p[k])), y + step - 4], fill=fill)
                draw.rectangle([bx0, y + 2, bx1, y + step - 4], outline="black", width=1)
            y += step


class _CsvOut:
    """The CSV stream of one run: the header goes out with the first row (or at `close` when no face was
    found), so an input that fails before its first row leaves stdout empty."""

    def __init__(self, out: TextIO, header: str) -> None:
        self.out, self.header = out, header

    def write(self, text: str) -> None:
        if self.header:
            self.out.write(self.header)
            self.header = ""
        self.out.write(text)
        self.out.flush()

    def close(self) -> None:
        self.write("")


def plan_images(inputs: list[str], out_dir: Path, skip_bad: bool) -> list[tuple[ImageFaces, dict[str, Path]]]:
    """Each image input opened, with the output path (suffix still to choose) of each of its images: a
    clean relative path (safepaths.member_path) that resolves inside out_dir and replaces no input.
    Checked for every image before anything is written."""
    from fercli.files.safepaths import inside, member_path, refuse_input

    opened = [ImageFaces(path, skip_bad) for path in inputs]  # every input noted before any check
    plans, planned = [], {}
    for path, images in zip(inputs, opened):
        if images.videos:
            console.info(f"{path}: skipped {plural(len(images.videos), 'video')} ({images.videos[0]}"
                         f"{', ...' if len(images.videos) > 1 else ''}): annotate each video on its own")  # fmt: skip
        if os.path.isdir(path) and os.path.realpath(path) == os.path.realpath(out_dir):
            raise FerError(f"{out_dir}: -o is the input folder {path}; annotated copies would replace the "
                           "originals (choose another folder)", USAGE)  # fmt: skip
        dests, kept = {}, []
        for entry in images.entries:
            rel = entry.path or Path(path).name
            try:
                dest = inside(out_dir, member_path(rel, path), path)
            except FerError as e:
                if not skip_bad or e.code == USAGE:
                    raise
                console.warn(f"skipped: {e}")
                continue
            for suffix in (".jpg", ".png"):
                refuse_input(dest.with_suffix(suffix), "-o")
            if dest in planned:  # `a/./b.png` and `a/b.png`, or two inputs with one name
                raise FerError(f"{dest} would be written twice ({planned[dest]} and {path}: {rel})", USAGE)
            planned[dest] = f"{path}: {rel}"
            dests[entry.path] = dest
            kept.append(entry)
        images.entries = kept
        plans.append((images, dests))
    return plans


def annotate_images(model: FerModel, mode: str, images: ImageFaces, dests: dict[str, Path], out: _CsvOut,
                    rows: RowWriter, skip_bad: bool, written: set[Path]) -> int:  # fmt: skip
    """Annotate every image of one planned input (plan_images) in the input's layout (JPEG stays JPEG,
    anything else becomes PNG); write their CSV rows to `out`; return the face count."""
    from fercli.data.imagefaces import decode_rgb
    from fercli.photos.crops import faces_of_images, row_prefix

    count = 0
    for name, entry, data, found in faces_of_images(images, mode, model.detector, skip_bad):
        rgb = decode_rgb(data, name)
        read = model.label(found)
        draw_faces(rgb, [(f.box, f.vector()) for f in read], model.classes)
        jpeg = data[:3] == b"\xff\xd8\xff"
        dest = dests[entry.path].with_suffix(".jpg" if jpeg else ".png")
        if dest in written:
            raise FerError(f"{dest} would be written twice (two inputs share the name {dest.name})", USAGE)
        written.add(dest)
        with atomic_path(dest) as tmp:
            rgb.save(tmp, format="JPEG" if jpeg else "PNG", **({"quality": 92} if jpeg else {}))
        out.write(rows([row_prefix(name, f) for f in found], _matrix(read, model.classes)))
        count += len(found)
    return count


def _matrix(faces: list[Face], classes: tuple[str, ...]) -> np.ndarray:
    """float32 [n,classes] of n faces' probabilities (n may be 0: a photo without faces)."""
    return np.stack([f.vector() for f in faces]) if faces else np.zeros((0, len(classes)), np.float32)


def annotate_video(model: FerModel, path: str, out_dir: Path, out: _CsvOut, rows: RowWriter, every: int,
                   smooth: int = VIDEO_SMOOTH) -> int:  # fmt: skip
    """An annotated copy of one video (same container, codec per VIDEO_EXTENSIONS) in out_dir, and rows
    `frame,time_s,face,track,x,y,w,h,...` for every face of every `every`-th frame (FerModel.video_frames:
    track ids, probabilities smoothed over `smooth` searched frames); boxes stay drawn until the next
    searched frame. Ctrl-C leaves no partial file (the copy is written under a temporary name)."""
    from fercli.photos.detect import opencv
    from fercli.photos.video import opened_video
    from fercli.progress import StepBar

    cv2 = opencv()
    with opened_video(path) as video:
        suffix = Path(path).suffix.lower()
        dest = video_dest(path, out_dir)
        count, frames, shown = 0, 0, []
        with atomic_path(dest, keep_suffix=True) as tmp, StepBar(video.count or 1, "frames", "frames") as bar:
            size = (video.width, video.height)
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*VIDEO_EXTENSIONS[suffix]), video.fps, size)
            if not writer.isOpened():
                raise FerError(f"{dest}: OpenCV cannot write this video format")
            try:
                for frame, found in model.video_frames(video.frames(), every, "bgr", fps=video.fps, smooth=smooth):
                    if found is not None:
                        shown = [(f.box, f.vector()) for f in found.faces]
                        lead = f"{found.frame},{found.time_s:.3f}"
                        prefixes = [f"{lead},{k},{f.track},{f.box.x},{f.box.y},{f.box.w},{f.box.h}"
                                    for k, f in enumerate(found.faces)]  # fmt: skip
                        out.write(rows(prefixes, _matrix(found.faces, model.classes)))
                        count += len(found.faces)
                    if shown:
                        rgb = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                        draw_faces(rgb, shown, model.classes)
                        frame = cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
                    writer.write(frame)
                    bar.advance()
                    frames += 1
            finally:
                writer.release()
        console.info(f"{path}: {plural(frames, 'frame')}, {plural(count, 'face')} in frames every {every}; "
                     f"wrote {dest}")  # fmt: skip
        return count


def annotate(inputs: list[str], out_dir: Path, model: FerModel, *, faces: str = "auto", every: int = 1,
             smooth: int = VIDEO_SMOOTH, probs: bool = False, names: bool = False, skip_bad: bool = False,
             out: TextIO) -> int:  # fmt: skip
    """`fer annotate`: images (files, folders, zips) or one video, into out_dir; the CSV to `out`."""
    from fercli.csvrows import row
    from fercli.data.imagefaces import is_image_source
    from fercli.errors import NOT_FOUND
    from fercli.files.safepaths import note_input
    from fercli.infer.predict import format_rows, probs_header
    from fercli.photos.crops import check_mode

    check_mode(faces)
    if every < 1:
        raise FerError("--every must be at least 1", USAGE)
    if smooth < 1:
        raise FerError("--smooth must be at least 1", USAGE)
    for path in inputs:
        if not os.path.exists(path):
            raise FerError(f"{path}: no such file or folder", NOT_FOUND)
        if not (is_video(path) or is_image_source(path)):
            raise FerError(f"{path}: not an image, folder, zip or video (mp4, avi, mov, mkv, m4v)", USAGE)
    videos = [p for p in inputs if is_video(p)]
    if videos and len(inputs) > 1:
        raise FerError("annotate one video per command (its CSV has frame columns); images can go together", USAGE)
    # Every output path is checked before the model loads: nothing is written outside -o or over an input.
    if videos:
        note_input(videos[0])
        video_dest(videos[0], out_dir)
    else:
        plans = plan_images(inputs, out_dir, skip_bad)

    def rows(prefixes: list[str], p: np.ndarray) -> str:
        return format_rows(prefixes, p, model.classes if names else None, probs)

    lead = ["frame", "time_s", "face", "track", "x", "y", "w", "h"] if videos else ["id", "face", "x", "y", "w", "h"]
    csv_out = _CsvOut(out, row([*lead, "emotion", *probs_header(model.classes, probs)]))
    if videos:
        n = annotate_video(model, videos[0], out_dir, csv_out, rows, every, smooth)
    else:
        written: set[Path] = set()
        n = sum(annotate_images(model, faces, images, dests, csv_out, rows, skip_bad, written)
                for images, dests in plans)
        console.info(f"annotated {plural(n, 'face')} in {plural(len(written), 'image')} into {out_dir}")
    csv_out.close()
    return n


def model_first(inputs: list[str], model: Path | None) -> tuple[list[str], str]:
    """(inputs, model) of `fer annotate`: a model given first, as `fer predict` takes it (`fer annotate
    builtin photo.jpg`), is taken for the model when --model is not given; else builtin."""
    from fercli.files.runs import is_model_ref

    if model is None and len(inputs) > 1 and is_model_ref(inputs[0]):
        return inputs[1:], inputs[0]
    if model is None and inputs == ["builtin"] and not os.path.exists("builtin"):
        raise FerError("builtin names a model: give it an input too (fer annotate builtin photo.jpg -o DIR)", USAGE)
    return inputs, str(model or "builtin")


def video_dest(path: str, out_dir: Path) -> Path:
    """Where a video's annotated copy goes: its name inside out_dir, never over the video itself."""
    from fercli.files.safepaths import inside, member_path, refuse_input

    dest = inside(out_dir, member_path(Path(path).name, path), path)
    refuse_input(dest, "-o")
    return dest
