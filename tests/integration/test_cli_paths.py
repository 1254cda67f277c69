"""``facelens predict`` / ``explain`` with bad paths: exit 1 with one line naming the path and
what is allowed; nothing written outside ``--out``; inputs never overwritten.

A missing parent folder of ``--out`` is created (documented in the README); one that cannot be
created or written is refused. Permission cases use ``chmod`` where the tests do not run as
root (root reads and writes through any mode bits) and a patched failing write everywhere.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facelens.cli.app import app

runner = CliRunner()


def _mode_bits_bind() -> bool:
    """Whether ``chmod 000`` stops this process from reading a file (not as root, unless root
    lost ``CAP_DAC_OVERRIDE``)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder, "probe")
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            probe.read_bytes()
        except PermissionError:
            return True
        return False


root_reads_anything = pytest.mark.skipif(
    not _mode_bits_bind(),
    reason="running as root: mode bits do not stop root (the patched cases cover it)",
)


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _one_error(result, *needles: str) -> str:
    """The single ``error:`` line of a failed command, checked for exit 1 and ``needles``."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = _error_lines(result)
    for needle in needles:
        assert needle in line, line
    return line


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its content's hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def face(cli_env, synth_png: Path) -> Path:
    """A copy of the SynthFACS face in the test's (current) folder."""
    path = Path("face.png").absolute()
    path.write_bytes(synth_png.read_bytes())
    return path


# ------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_missing_file_and_folder_inputs(cli_env, command, tmp_path):
    missing = tmp_path / "nope.png"
    _one_error(
        runner.invoke(app, [command, str(missing), "-m", cli_env.run_id]),
        str(missing),
        "no such file",
        "PNG, JPEG",
    )
    folder = tmp_path / "faces.png"
    folder.mkdir()
    _one_error(
        runner.invoke(app, [command, str(folder), "-m", cli_env.run_id]),
        str(folder),
        "is a folder",
        "PNG, JPEG",
    )
    assert _tree(tmp_path) == {}  # nothing written (no cam.png)


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_non_image_input(cli_env, command, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("a shopping list, not an image")
    _one_error(
        runner.invoke(app, [command, str(text), "-m", cli_env.run_id]),
        str(text),
        "unsupported_format",
    )
    assert not Path("cam.png").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_device_file_is_refused_without_reading_it(cli_env):
    _one_error(
        runner.invoke(app, ["predict", "/dev/zero", "-m", cli_env.run_id]),
        "/dev/zero",
        "not a regular file",
    )


@root_reads_anything
def test_unreadable_file_chmod(cli_env, face):
    face.chmod(0)
    try:
        for command in ("predict", "explain"):
            _one_error(
                runner.invoke(app, [command, str(face), "-m", cli_env.run_id]),
                str(face),
                "could not be read (Permission denied)",
            )
    finally:
        face.chmod(0o644)


@pytest.mark.parametrize("detect", [[], ["--detect-face"]], ids=["plain", "detect-face"])
@pytest.mark.parametrize("command", ["predict", "explain"])
def test_unreadable_file_patched(cli_env, face, command, detect, monkeypatch):
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == face.name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = runner.invoke(app, [command, str(face), *detect, "-m", cli_env.run_id])
    _one_error(result, str(face), "could not be read (Permission denied)", "PNG, JPEG")
    assert sorted(p.name for p in Path(".").iterdir()) == ["face.png"]


# ------------------------------------------------------------------------------ --out


@pytest.mark.parametrize(
    "spelling",
    ["same", "relative", "dotted", "symlink", "hardlink"],
)
def test_explain_never_overwrites_its_input(cli_env, face, spelling):
    before = face.read_bytes()
    out = {
        "same": str(face),
        "relative": "face.png",
        "dotted": f"{face.parent}/./sub/../face.png",
        "symlink": "link.png",
        "hardlink": "hard.png",
    }[spelling]
    if spelling == "symlink":
        Path("link.png").symlink_to(face)
    if spelling == "hardlink":
        os.link(face, "hard.png")
    Path("sub").mkdir()
    _one_error(
        runner.invoke(app, ["explain", str(face), "--out", out, "-m", cli_env.run_id]),
        str(Path(out)),
        "would overwrite the input",
    )
    assert face.read_bytes() == before


def test_explain_all_methods_never_overwrites_an_input_in_out(cli_env, synth_png):
    Path("cams").mkdir()
    image = Path("cams/methods.png")  # the grid's name
    image.write_bytes(synth_png.read_bytes())
    before = _tree(Path("."))
    result = runner.invoke(
        app, ["explain", str(image), "--all-methods", "--out", "cams", "-m", cli_env.run_id]
    )
    _one_error(result, "methods.png", "would overwrite the input")
    assert _tree(Path(".")) == before


def test_explain_creates_a_missing_out_folder(cli_env, face):
    result = runner.invoke(
        app, ["explain", str(face), "--out", "new/deeper/cam.png", "-m", cli_env.run_id]
    )
    assert result.exit_code == 0, result.output
    assert sorted(_tree(Path("."))) == ["face.png", "new/deeper/cam.png"]


def test_explain_out_under_a_file_is_refused(cli_env, face):
    before = _tree(Path("."))
    result = runner.invoke(
        app, ["explain", str(face), "--out", "face.png/cam.png", "-m", cli_env.run_id]
    )
    _one_error(result, "face.png/cam.png", "is a file")
    assert _tree(Path(".")) == before


@root_reads_anything
def test_explain_out_in_a_read_only_folder_chmod(cli_env, face):
    Path("locked").mkdir(mode=0o555)
    try:
        for out in ("locked/cam.png", "locked/missing/cam.png"):
            result = runner.invoke(app, ["explain", str(face), "--out", out, "-m", cli_env.run_id])
            _one_error(result, out, "is not writable")
        assert _tree(Path("locked")) == {}
    finally:
        Path("locked").chmod(0o755)


@pytest.mark.parametrize("all_methods", [False, True], ids=["one", "all-methods"])
@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOSPC, errno.EROFS])
def test_explain_failed_write_is_one_line_and_leaves_nothing(
    cli_env, face, code, all_methods, monkeypatch
):
    """The write itself fails (read-only mount, disk full, permission): one line, no file."""
    import facelens._io as io_helpers

    Path("out").mkdir()
    Path("out/cam.png").write_bytes(b"previous overlay")
    before = _tree(Path("."))

    def replace(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code), dst)

    monkeypatch.setattr(io_helpers.os, "replace", replace)
    out = "out/cams" if all_methods else "out/cam.png"
    args = ["explain", str(face), "--out", out, "-m", cli_env.run_id]
    if all_methods:
        from facelens.explain.cams import compute, methods

        few = {"gradcam": methods.METHODS["gradcam"]}
        monkeypatch.setattr(methods, "METHODS", few)
        monkeypatch.setattr(compute, "METHODS", few)
        args.append("--all-methods")
    result = runner.invoke(app, args)
    _one_error(result, out, f"could not be written ({os.strerror(code)})")
    after = _tree(Path("."))
    assert after == before  # no partial file, no temporary left, the old overlay kept


# ------------------------------------------------------------------------------ data synth


def test_data_synth_bad_out_and_preview_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("not a folder")
    before = _tree(tmp_path)
    small = ["data", "synth", "--n-identities", "2"]
    _one_error(
        runner.invoke(app, [*small, "--preview", "afile/grid.png"]), "afile/grid.png", "is a file"
    )
    _one_error(runner.invoke(app, [*small, "--out", "afile"]), "afile", "names a file")
    _one_error(runner.invoke(app, [*small, "--out", "afile/sub"]), "afile/sub", "is a file")
    assert _tree(tmp_path) == before


def test_data_synth_failed_preview_write_is_one_line(tmp_path, monkeypatch):
    import facelens._io as io_helpers

    monkeypatch.chdir(tmp_path)

    def replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)

    monkeypatch.setattr(io_helpers.os, "replace", replace)
    result = runner.invoke(app, ["data", "synth", "--n-identities", "2", "--preview", "g/p.png"])
    _one_error(result, "g/p.png", "could not be written (No space left on device)")
    assert _tree(tmp_path) == {}


def test_data_synth_creates_missing_folders_for_preview_and_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        ["data", "synth", "--n-identities", "2", "--preview", "a/b/grid.png", "--out", "c/d"],
    )
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open("a/b/grid.png") as grid:
        assert grid.format == "PNG" and grid.size[0] > 100
    assert Path("c/d").is_dir() and any(Path("c/d").rglob("*.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]  # no temporary left
