"""A job killed while writing a checkpoint loses that checkpoint only; --resume finds the last whole one.

The kills are real: a child process writes a checkpoint through mmengine's own ``save_checkpoint``
and dies by a signal in the middle of the write, either SIGXFSZ (a file-size limit makes the
kernel kill it at an exact byte, so the write is surely interrupted) or SIGKILL sent by the test
once the child reports that it is inside a write (its bytes on disk, the rename still to come).
"""
import inspect
import io
import os
import signal
import stat
import subprocess
import textwrap
import threading
import zipfile

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import get_file_backend
from mmengine.runner import Runner
from mmengine.runner.checkpoint import save_checkpoint

from mmfocal.engine.atomic_checkpoint import (
    TEMP_SUFFIX,
    AtomicLocalBackend,
    find_latest_complete_checkpoint,
    is_complete_checkpoint,
    remove_interrupted_writes,
)
from mmfocal.engine.safe_load import load_checkpoint_file

from .helpers import DET_DEMO_CONFIG, linear_regression_runner, run_tool, tool_command, tool_environment

# The child imports mmfocal only when told to: the control run shows what mmengine alone leaves.
WRITER = textwrap.dedent('''
    import os, resource, signal, stat, sys
    import torch
    from mmengine.runner.checkpoint import save_checkpoint
    path, mode, fsize_limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == 'atomic':
        from mmfocal.engine import atomic_checkpoint
        atomic_checkpoint.install()
    # 16 MB of weights: far more than the size limit, and long enough to write that SIGKILL lands mid-write.
    checkpoint = dict(meta=dict(iter=2), state_dict=dict(weight=torch.full((4_000_000,), 2.0)))
    if fsize_limit:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; the default kills
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
        save_checkpoint(checkpoint, path)
    else:
        # Stop inside the write, once the new bytes are on disk and before the rename makes them
        # the checkpoint: say so, and wait there for the parent's SIGKILL.
        fsync = os.fsync
        def fsync_then_wait(descriptor):
            fsync(descriptor)
            if stat.S_ISREG(os.fstat(descriptor).st_mode):  # the file's, not the directory's
                print('inside a write', flush=True)
                sys.stdin.read()
        os.fsync = fsync_then_wait
        save_checkpoint(checkpoint, path)
''')


def small_checkpoint(iteration):
    return dict(meta=dict(iter=iteration), state_dict=dict(weight=torch.full((8,), float(iteration))))


def writer_script(tmp_path):
    script = tmp_path / 'writer.py'
    script.write_text(WRITER)
    return script


def run_writer(tmp_path, path, mode, fsize_limit):
    """(exit code, output) of the writer."""
    return run_tool(writer_script(tmp_path), path, mode, fsize_limit, check=False)


def temp_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(TEMP_SUFFIX))


def test_mmengine_saves_checkpoints_through_the_atomic_backend(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    assert isinstance(get_file_backend(path), AtomicLocalBackend)
    save_checkpoint(small_checkpoint(1), path)
    assert torch.load(path)['state_dict']['weight'][0] == 1
    assert temp_files(tmp_path) == []
    get_file_backend(path).put_text('text', str(tmp_path / 'notes.txt'))
    assert (tmp_path / 'notes.txt').read_text() == 'text' and temp_files(tmp_path) == []


def test_overwriting_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / 'target.pth'
    link = tmp_path / 'link.pth'
    save_checkpoint(small_checkpoint(1), str(target))
    link.symlink_to(target)
    save_checkpoint(small_checkpoint(2), str(link))
    assert link.is_symlink() and torch.load(target)['meta']['iter'] == 2


def read_fifo_in_background(path, received):
    """A reader of the FIFO ``path`` (a writer's open waits for one), which puts what it reads in ``received``."""
    def read():
        with open(path, 'rb') as fifo:
            received.append(fifo.read())
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def test_a_fifo_is_written_in_place_not_replaced_also_through_a_symlink(tmp_path):
    fifo, link = tmp_path / 'pipe.pth', tmp_path / 'link.pth'
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    for iteration, path in enumerate((fifo, link), start=1):
        received = []
        reader = read_fifo_in_background(fifo, received)
        save_checkpoint(small_checkpoint(iteration), str(path))
        reader.join(timeout=60)
        assert torch.load(io.BytesIO(received[0]))['meta']['iter'] == iteration
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert temp_files(tmp_path) == []


def test_a_device_node_is_written_in_place_not_replaced(tmp_path):
    null = tmp_path / 'null'  # a node of the kernel's null device (major 1, minor 3), not /dev/null itself
    try:
        os.mknod(null, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip('making a device node needs root')
    save_checkpoint(small_checkpoint(1), str(null))
    get_file_backend(str(null)).put_text('text', str(null))
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert temp_files(tmp_path) == []


def test_only_abandoned_temporary_files_of_the_writer_are_removed(tmp_path):
    abandoned = [tmp_path / f'.epoch_{i}.pth.{1000 + i}.0123abcd{TEMP_SUFFIX}' for i in (1, 2)]
    for path in abandoned:
        path.write_bytes(b'x' * 100)
    others = [tmp_path / f'.download{TEMP_SUFFIX}', tmp_path / f'epoch_3.pth.1003.0123abcd{TEMP_SUFFIX}']
    for path in others:
        path.write_bytes(b'someone else\'s')
    (tmp_path / f'.epoch_4.pth.1004.0123abcd{TEMP_SUFFIX}').symlink_to(others[0])
    os.mkfifo(tmp_path / f'.epoch_5.pth.1005.0123abcd{TEMP_SUFFIX}')  # opened, it must not wait for a writer
    kept = sorted(os.listdir(tmp_path))
    for path in abandoned:
        kept.remove(path.name)
    assert remove_interrupted_writes(str(tmp_path)) == (2, 200)
    assert sorted(os.listdir(tmp_path)) == kept
    assert remove_interrupted_writes(str(tmp_path / 'absent')) == (0, 0)


def test_plain_mmengine_leaves_a_truncated_checkpoint_when_killed_mid_write(tmp_path):
    # The control for the next test: without mmfocal the final path gets the partial file.
    path = tmp_path / 'epoch_2.pth'
    code, output = run_writer(tmp_path, path, 'plain', fsize_limit=1 << 20)
    assert code == -signal.SIGXFSZ, output
    assert path.stat().st_size == 1 << 20
    assert not is_complete_checkpoint(str(path))


def test_killed_mid_write_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / 'epoch_2.pth'
    save_checkpoint(small_checkpoint(1), str(path))
    before = path.read_bytes()
    code, output = run_writer(tmp_path, path, 'atomic', fsize_limit=1 << 20)
    assert code == -signal.SIGXFSZ, output
    assert path.read_bytes() == before  # the interrupted write never reached the final path
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1 and (tmp_path / leftovers[0]).stat().st_size == 1 << 20
    assert find_latest_complete_checkpoint(str(tmp_path)) == str(path)
    # The next save into the directory removes what the killed one left.
    save_checkpoint(small_checkpoint(3), str(tmp_path / 'epoch_3.pth'))
    assert temp_files(tmp_path) == [] and path.read_bytes() == before


def test_sigkill_inside_a_save_never_exposes_a_partial_file(tmp_path):
    path = tmp_path / 'iter_2.pth'
    save_checkpoint(small_checkpoint(1), str(path))
    child = subprocess.Popen(tool_command(writer_script(tmp_path), path, 'atomic', 0), env=tool_environment(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    # Reading lines blocks until the child's report, and ends if the child dies first: no spinning.
    before = []
    for line in child.stdout:
        if line.strip() == 'inside a write':
            break
        before.append(line)
    else:
        pytest.fail(f'the writer ended without reaching the write:\n{"".join(before)}')
    (leftover, ) = temp_files(tmp_path)  # the new bytes are in a temporary file...
    # ...which neither a cleaner nor another save takes from its live writer.
    assert remove_interrupted_writes(str(tmp_path)) == (0, 0)
    get_file_backend(str(tmp_path)).put_text('a write beside it', str(tmp_path / 'notes.txt'))
    assert temp_files(tmp_path) == [leftover]
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # The kill left the old content, whole (a kill after the rename would leave the new, whole)...
    assert torch.load(path)['meta']['iter'] == 1
    assert find_latest_complete_checkpoint(str(tmp_path)) == str(path)
    # ...and a temporary file that nobody holds any more: a cleaner removes it, saying how much.
    size = (tmp_path / leftover).stat().st_size
    assert size > 0 and remove_interrupted_writes(str(tmp_path)) == (1, size) and temp_files(tmp_path) == []


def write_truncated(path, iteration):
    """What a killed non-atomic writer leaves: the first half of a real checkpoint."""
    buffer = io.BytesIO()
    torch.save(small_checkpoint(iteration), buffer)
    whole = buffer.getvalue()
    path.write_bytes(whole[:len(whole) // 2])


def set_mtimes(*paths):
    for age, path in enumerate(reversed(paths)):
        os.utime(path, ns=(10**18 - age * 10**9, 10**18 - age * 10**9))


def test_finder_uses_last_checkpoint_when_it_is_complete(tmp_path):
    for i in (1, 2):
        save_checkpoint(small_checkpoint(i), str(tmp_path / f'epoch_{i}.pth'))
    set_mtimes(tmp_path / 'epoch_2.pth', tmp_path / 'epoch_1.pth')  # epoch_1 newer on disk
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert find_latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')


@pytest.mark.parametrize('marker', ['truncated target', 'empty', 'missing target', 'absent'])
def test_finder_falls_back_to_the_newest_complete_checkpoint(tmp_path, marker):
    save_checkpoint(small_checkpoint(1), str(tmp_path / 'epoch_1.pth'))
    save_checkpoint(small_checkpoint(2), str(tmp_path / 'epoch_2.pth'))
    write_truncated(tmp_path / 'epoch_3.pth', 3)
    (tmp_path / f'.epoch_4.pth.123.abcd{TEMP_SUFFIX}').write_bytes(b'PK\x03\x04 partial')
    save_checkpoint(small_checkpoint(9), str(tmp_path / 'best_coco_bbox_mAP_epoch_2.pth'))
    set_mtimes(tmp_path / 'epoch_1.pth', tmp_path / 'epoch_2.pth', tmp_path / 'best_coco_bbox_mAP_epoch_2.pth',
               tmp_path / 'epoch_3.pth')
    if marker == 'truncated target':
        (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    elif marker == 'empty':
        (tmp_path / 'last_checkpoint').write_text('')
    elif marker == 'missing target':
        (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_4.pth'))
    assert find_latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')


def test_finder_returns_none_without_a_complete_checkpoint(tmp_path):
    assert find_latest_complete_checkpoint(str(tmp_path)) is None
    write_truncated(tmp_path / 'epoch_1.pth', 1)
    assert find_latest_complete_checkpoint(str(tmp_path)) is None


def test_finder_returns_a_complete_but_refused_checkpoint_for_the_loader_to_reject(tmp_path):
    # Whether to trust the content is the loader's decision, made with a clear error; skipping a
    # whole newer checkpoint silently would resume from an older state instead.
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(state_dict={}, meta=dict(opaque=torch.nn.ReLU())), path)
    assert find_latest_complete_checkpoint(str(tmp_path)) == str(path)


def test_completeness_is_decided_for_stated_reasons(tmp_path):
    whole = tmp_path / 'whole.pth'
    save_checkpoint(small_checkpoint(1), str(whole))
    assert is_complete_checkpoint(str(whole))
    # Whole, but not a training checkpoint: no state_dict.
    torch.save(dict(model=small_checkpoint(1)['state_dict']), tmp_path / 'weights.pth')
    assert not is_complete_checkpoint(str(tmp_path / 'weights.pth'))
    # Not torch's zip format: the legacy format, and bytes that are no checkpoint at all.
    torch.save(small_checkpoint(1), tmp_path / 'legacy.pth', _use_new_zipfile_serialization=False)
    assert not is_complete_checkpoint(str(tmp_path / 'legacy.pth'))
    (tmp_path / 'noise.pth').write_bytes(b'\x80\x02 not a checkpoint')
    assert not is_complete_checkpoint(str(tmp_path / 'noise.pth'))
    # A zip whose pickle was damaged: its CRC tells, where unpickling it would fail like a refusal.
    data = bytearray(whole.read_bytes())
    with zipfile.ZipFile(whole) as archive:
        (name, ) = [n for n in archive.namelist() if n.endswith('/data.pkl')]
        start = bytes(data).index(archive.read(name))
    data[start + 2:start + 6] = b'\xff\xff\xff\xff'
    (tmp_path / 'damaged.pth').write_bytes(bytes(data))
    assert not is_complete_checkpoint(str(tmp_path / 'damaged.pth'))
    (tmp_path / 'folder.pth').mkdir()
    assert not is_complete_checkpoint(str(tmp_path / 'folder.pth'))


def test_runner_checkpoints_are_whole_and_the_finder_resumes_from_the_last(tmp_path):
    def runner(max_epochs, **resume):
        return linear_regression_runner(tmp_path, max_epochs, f'run{max_epochs}', **resume)

    runner(2).train()
    assert temp_files(tmp_path) == []
    latest = find_latest_complete_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / 'epoch_2.pth')
    # A third epoch's save killed half-way, by a writer that was not atomic:
    write_truncated(tmp_path / 'epoch_3.pth', 3)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    latest = find_latest_complete_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / 'epoch_2.pth')
    resumed = runner(3, resume=True, load_from=latest)
    resumed.train()
    assert resumed.train_loop.epoch == 3 and is_complete_checkpoint(str(tmp_path / 'epoch_3.pth'))


def test_train_resume_without_a_path_skips_a_checkpoint_cut_short(demo_workspace, tmp_path):
    """tools/train.py --resume: epoch 2's save was cut short, so training resumes after epoch 1."""
    work_dir = tmp_path / 'work'
    # Two of the session's demo pictures, one per iteration.
    options = dict(train_dataloader=dict(dataset=dict(data_root=f'{demo_workspace}/data/demo/coco/', indices=2),
                                         batch_size=1, num_workers=0, persistent_workers=False),
                   val_cfg=None, val_dataloader=None, val_evaluator=None,
                   default_hooks=dict(checkpoint=dict(interval=1), logger=dict(interval=1)))
    # Epoch 1 in this process (the Runner is built from the config's parts, as from_cfg would).
    cfg = Config.fromfile(DET_DEMO_CONFIG)
    cfg.merge_from_dict(dict(options, train_cfg=dict(max_epochs=1), work_dir=str(work_dir)))
    arguments = set(inspect.signature(Runner.__init__).parameters) - {'self', 'cfg'}
    Runner(**{name: cfg[name] for name in arguments if name in cfg}).train()
    assert is_complete_checkpoint(str(work_dir / 'epoch_1.pth'))
    # Epoch 2's save killed half-way by a writer that was not atomic, after last_checkpoint moved on;
    # and the temporary files of two atomic writes killed before that.
    write_truncated(work_dir / 'epoch_2.pth', 2)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))
    for pid in (1001, 1002):
        (work_dir / f'.epoch_2.pth.{pid}.0123abcd{TEMP_SUFFIX}').write_bytes(b'x' * 1000)

    config = tmp_path / 'demo_config.py'
    cfg.merge_from_dict(dict(train_cfg=dict(max_epochs=2)))
    cfg.dump(str(config))
    _, log = run_tool('train.py', config, '--resume')
    assert f'Load checkpoint from {work_dir / "epoch_1.pth"}' in log and 'resumed epoch: 1, iter: 2' in log
    # Removed by --resume, before the run started, with what they took.
    removed = f'{os.path.realpath(work_dir)}: removed 2 temporary file(s) of interrupted checkpoint writes (2000 bytes)'
    assert removed in log and log.index(removed) < log.index('Load checkpoint from')
    assert load_checkpoint_file(str(work_dir / 'epoch_2.pth'))['meta']['epoch'] == 2  # rewritten, whole
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'epoch_2.pth')
    assert temp_files(work_dir) == []


def test_uninstall_restores_mmengines_writes_in_place_and_install_makes_them_atomic_again(tmp_path, monkeypatch):
    from mmengine.fileio import FileClient
    from mmengine.fileio.backends import LocalBackend

    from mmfocal.engine import atomic_checkpoint
    renames = []
    replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda src, dst: (renames.append(dst), replace(src, dst)))
    path = str(tmp_path / 'epoch_1.pth')
    try:
        atomic_checkpoint.uninstall()
        atomic_checkpoint.uninstall()  # idempotent
        assert not atomic_checkpoint.is_installed()
        assert type(get_file_backend(path)) is LocalBackend
        assert type(FileClient('disk').client).__name__ == 'HardDiskBackend'
        save_checkpoint(small_checkpoint(1), path)
        assert renames == [] and torch.load(path)['meta']['iter'] == 1  # written in place
    finally:
        atomic_checkpoint.install()
    assert atomic_checkpoint.is_installed() and isinstance(get_file_backend(path), AtomicLocalBackend)
    save_checkpoint(small_checkpoint(2), path)
    assert renames == [path] and torch.load(path)['meta']['iter'] == 2 and temp_files(tmp_path) == []
