"""Hostile checkpoint files, made here, through every way a checkpoint gets into a job.

Each file is assembled opcode by opcode (as an attacker would write it, not by pickling real
objects): numpy dtypes with the object flags, stride-0 and oversized arrays, arrays never filled,
codecs (punycode's quadratic time among them), keys that are not names, float128, malformed
pickles, each opcode family that creates or fills objects, a flipped bit in a zip, the legacy tar
format; and a TorchScript archive, a FIFO, a directory, a device. Every entry point must refuse
every file with one line naming the file and what is wrong (an mmfocal error; for a tool, its last
line on stderr and exit status 1, never a signal or a traceback), within a memory bound and a
generous time bound (a hang guard). The library entry points (``CheckpointLoader``, ``load_from``,
``init_cfg`` Pretrained, ``Runner.resume``) and both converters' ``main`` loop over all files in
one subprocess; the tools run as commands on representative files.
"""
import io
import json
import os
import os.path as osp
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import zipfile

import numpy as np
import pytest
import torch

from mmfocal.engine.checkpoint_files import (
    CheckpointDownloadError,
    IncompleteCheckpointError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
)
from mmfocal.engine.safe_load import load_checkpoint_file
from mmfocal.errors import MMFocalError
from mmfocal.models.checkpoints import CheckpointMismatchError

from .helpers import ROOT, TINY_BACKBONE, tool_command, tool_environment
from .test_safe_load import tiny_detector_test_config

# Bounds: memory a refusal may add to the process (the files declare at most a few kilobytes of
# data, so this is the "2x declared bytes + 500 MB" bound), and a hang guard (not a speed limit).
MEMORY_BOUND_KB = 500 * 1024
HANG_GUARD_S = 600


# ---------------------------------------------------------------- assembling pickles, opcode by opcode

def name(module: str, attribute: str) -> bytes:
    return b'c' + module.encode() + b'\n' + attribute.encode() + b'\n'


def text(value: str) -> bytes:
    data = value.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def integer(value: int) -> bytes:
    if -2**31 <= value < 2**31:
        return b'J' + struct.pack('<i', value)
    data = pickle.encode_long(value)
    return b'\x8a' + bytes([len(data)]) + data


def raw(data: bytes) -> bytes:
    return b'B' + struct.pack('<I', len(data)) + data


def tup(*parts: bytes) -> bytes:
    return b'(' + b''.join(parts) + b't'


def dct(*parts: bytes) -> bytes:
    return b'}(' + b''.join(parts) + b'u'


NONE, FALSE, TRUE, CALL, FILL = b'N', b'\x89', b'\x88', b'R', b'b'


def pickled(*parts: bytes) -> bytes:
    return b'\x80\x02' + b''.join(parts) + b'.'


def dtype(code: str, order: str = '<', flags: int = 0, fields: bytes = NONE) -> bytes:
    """numpy.dtype(code) filled with a state whose flags (and fields) the file chooses."""
    state = tup(integer(3), text(order), NONE, fields, NONE, integer(-1), integer(-1), integer(flags))
    return name('numpy', 'dtype') + tup(text(code), FALSE, TRUE) + CALL + state + FILL


def empty_array() -> bytes:
    return name('numpy.core.multiarray', '_reconstruct') + tup(name('numpy', 'ndarray'), tup(integer(0)),
                                                               raw(b'b')) + CALL


def array(shape, of: bytes, data: bytes) -> bytes:
    return empty_array() + tup(integer(1), tup(*map(integer, shape)), of, FALSE, raw(data)) + FILL


def tensor(size, stride, numel: int) -> bytes:
    """torch._utils._rebuild_tensor_v2 over storage record 0 (float32) of ``numel`` elements."""
    storage = tup(text('storage'), name('torch', 'FloatStorage'), text('0'), text('cpu'), integer(numel)) + b'Q'
    hooks = name('collections', 'OrderedDict') + b')' + CALL
    return name('torch._utils', '_rebuild_tensor_v2') + tup(storage, integer(0), tup(*map(integer, size)),
                                                            tup(*map(integer, stride)), FALSE, hooks) + CALL


def checkpoint(meta: bytes = dct(), state: bytes = dct()) -> bytes:
    """A plausible training checkpoint around the hostile part."""
    return pickled(dct(text('meta'), meta, text('state_dict'), state))


def weights(*entries: bytes) -> bytes:
    """A plausible .pdparams around the hostile part: a dict of named arrays."""
    return pickled(dct(text('patch_embed.proj.bias'), array((2, ), dtype('f4'), bytes(8)), *entries))


def torch_zip(pickle_bytes: bytes, storages=None) -> bytes:
    """What torch.save writes (a stored zip of data.pkl and storage records), with our pickle."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as archive:
        archive.writestr('archive/data.pkl', pickle_bytes)
        archive.writestr('archive/byteorder', 'little')
        for key, data in (storages or {}).items():
            archive.writestr(f'archive/data/{key}', data)
        archive.writestr('archive/version', '3\n')
    return out.getvalue()


def saved(obj, **options) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out, **options)
    return out.getvalue()


def flip_a_stored_bit(data: bytes) -> bytes:
    """A bit of a tensor's stored bytes changed, as a bad download or disk would."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        stored = archive.read(next(m for m in archive.namelist() if '/data/' in m))
    damaged = bytearray(data)
    damaged[data.index(stored) + len(stored) // 2] ^= 1
    return bytes(damaged)


def deflated(data: bytes) -> bytes:
    """The same zip with its members compressed (torch never compresses; a zip bomb would be)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member))
    return out.getvalue()


def tar_checkpoint() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w') as archive:
        for member in ('sys_info', 'pickle', 'storages', 'tensors'):
            info = tarfile.TarInfo(member)
            info.size = 2
            archive.addfile(info, io.BytesIO(pickle.dumps(None)[:2]))
    return out.getvalue()


OBJECT_ARRAY = array((2, ), dtype('O8', '|', flags=0), b'A' * 16)  # numpy reads the A's as object pointers
STRIDE_0 = name('numpy', 'ndarray') + tup(tup(integer(100000), integer(100000)), dtype('f4'), raw(bytes(4)),
                                          integer(0), tup(integer(0), integer(0))) + CALL
PUNYCODE = name('_codecs', 'encode') + tup(text('\u00e9a' * 40000), text('punycode')) + CALL

# name: (file suffix, contents, what the one line must say besides the file's name)
HOSTILE = {
    # .pdparams: read by paddle_checkpoint's unpickler
    'object_dtype.pdparams': weights(text('w'), OBJECT_ARRAY),
    'structured_dtype.pdparams': weights(text('w'), array((1, ), dtype('f8', fields=dct()), bytes(8))),
    'stride_0.pdparams': weights(text('w'), STRIDE_0),
    'oversized.pdparams': weights(text('w'), array((100000, 100000), dtype('f4'), bytes(4))),
    'unfilled.pdparams': weights(text('w'), empty_array()),
    'punycode.pdparams': weights(text('w'), PUNYCODE),
    'unknown_codec.pdparams': weights(text('w'), name('_codecs', 'encode') + tup(text('x'), text('nope')) + CALL),
    'int_key.pdparams': weights(integer(7), array((1, ), dtype('f4'), bytes(4))),
    'none_key.pdparams': weights(NONE, array((1, ), dtype('f4'), bytes(4))),
    'float128.pdparams': weights(text('w'), array((1, ), dtype('f16'), bytes(16))),
    'object_scalar.pdparams': weights(text('w'), name('numpy.core.multiarray', 'scalar') + tup(dtype('O8'), raw(
        b'A' * 8)) + CALL),
    'os_system.pdparams': weights(text('w'), name('posix', 'system') + tup(text('true')) + CALL),
    'persistent_id.pdparams': weights(text('w'), text('0') + b'Q'),
    'truncated.pdparams': weights()[:-20],
    'garbage.pdparams': b'\x80\x02\xff\xfe\xfd',
    'stack_underflow.pdparams': pickled(b'0'),
    'memo_missing.pdparams': pickled(b'h\x05'),
    'inst.pdparams': pickled(b'(iposix\nsystem\n'),
    'obj.pdparams': pickled(b'(' + name('collections', 'OrderedDict') + b'o'),
    'newobj_ex.pdparams': pickled(name('collections', 'OrderedDict') + b')}\x92'),
    'ext1.pdparams': pickled(b'\x82\x01'),
    'stack_global.pdparams': b'\x80\x04' + text('posix') + text('system') + b'\x93' + tup(text('true')) + CALL + b'.',
    'fill_a_dict.pdparams': pickled(b'}' + dct(text('__class__'), NONE) + FILL),
    'append_to_ordered_dict.pdparams': pickled(name('collections', 'OrderedDict') + b')' + CALL + b'(' + integer(1)
                                               + b'e'),
    'setitem_on_list.pdparams': pickled(b']' + integer(1) + integer(2) + b's'),
    'deep_nesting.pdparams': pickled(b']' * 3000 + b'a' * 2999),
    'bytearray_size.pdparams': weights(text('w'), name('builtins', 'bytearray') + tup(integer(10**12)) + CALL),
    'huge_string.pdparams': b'\x80\x04\x8d' + struct.pack('<Q', 2**40) + b'abc',
    'not_a_dict.pdparams': pickled(b']'),
    # .pth: torch.load with mmfocal's unpickler (zip and legacy formats)
    'object_dtype.pth': torch_zip(checkpoint(dct(text('palette'), OBJECT_ARRAY))),
    'object_dtype_legacy.pth': checkpoint(dct(text('palette'), OBJECT_ARRAY)),
    'stride_0_numpy.pth': torch_zip(checkpoint(dct(text('log'), STRIDE_0))),
    'stride_0_tensor.pth': torch_zip(checkpoint(dct(text('log'), tensor((100000, 100000), (0, 0), 1))),
                                     {'0': bytes(4)}),
    'oversized.pth': checkpoint(dct(text('x'), array((100000, 100000), dtype('f4'), bytes(4)))),
    'unfilled.pth': torch_zip(checkpoint(dct(text('x'), empty_array()))),
    'punycode.pth': torch_zip(checkpoint(dct(text('x'), PUNYCODE))),
    'bytearray_size.pth': torch_zip(checkpoint(dct(text('x'), name('builtins', 'bytearray') + tup(integer(10**12))
                                                   + CALL))),
    'uninitialised_storage.pth': torch_zip(checkpoint(dct(text('x'), name('torch', 'UntypedStorage')
                                                          + tup(integer(10**10)) + CALL))),
    'uninitialised_tensor.pth': torch_zip(checkpoint(dct(text('x'), name('torch', 'Tensor') + tup(integer(10**9))
                                                         + CALL))),
    'float128.pth': torch_zip(checkpoint(dct(text('x'), array((1, ), dtype('f16'), bytes(16))))),
    'int_key.pth': torch_zip(checkpoint(state=dct(integer(0), tensor((1, ), (1, ), 1))), {'0': bytes(4)}),
    'none_key.pth': torch_zip(checkpoint(state=dct(NONE, tensor((1, ), (1, ), 1))), {'0': bytes(4)}),
    'getattr_init.pth': torch_zip(checkpoint(dct(text('x'), name('builtins', 'getattr') + tup(name(
        'mmengine.logging.history_buffer', 'HistoryBuffer'), text('__init__')) + CALL))),
    'rebuild_from_type.pth': torch_zip(checkpoint(dct(text('x'), name('torch._tensor', '_rebuild_from_type_v2')))),
    'malformed.pth': torch_zip(pickled(b'0')),
    'truncated.pth': saved({'state_dict': {'w': torch.zeros(1000)}})[:1500],
    'bit_flip.pth': flip_a_stored_bit(saved({'state_dict': {'w': torch.arange(1000.)}})),
    'compressed.pth': deflated(saved({'state_dict': {'w': torch.zeros(1000)}})),
    'tar_format.pth': tar_checkpoint(),
    'not_a_checkpoint.pth': pickle.dumps(5, protocol=2),
    'deep_nesting.pth': pickled(b']' * 3000 + b'a' * 2999),
    'huge_string.pth': b'\x80\x04\x8d' + struct.pack('<Q', 2**40) + b'abc',
}

EXPECTED = {  # what each refusal names (file names without the suffix, unless both kinds differ)
    'object_dtype': "dtype 'O8'",
    'structured_dtype': 'no fields',
    'stride_0': 'numpy.ndarray',
    'stride_0_numpy': 'numpy.ndarray',
    'stride_0_tensor': 'an expanded view',
    'oversized': 'declares 40000000000 bytes',
    'unfilled': 'never filled',
    'punycode': "encoding 'punycode'",
    'unknown_codec': "encoding 'nope'",
    'int_key': 'keys that are not names: 7',
    'none_key': 'keys that are not names: None',
    'float128': "dtype 'f16'",
    'object_scalar': "dtype 'O8'",
    'os_system': 'posix.system',
    'persistent_id': 'persistent id',
    'truncated': 'truncated or corrupt',
    'garbage': 'truncated or corrupt',
    'stack_underflow': 'truncated or corrupt',
    'memo_missing': 'truncated or corrupt',
    'inst': 'pickle opcode INST',
    'obj': 'pickle opcode OBJ',
    'newobj_ex': 'pickle opcode NEWOBJ_EX',
    'ext1': 'pickle opcode EXT1',
    'stack_global': 'posix.system',
    'fill_a_dict': 'filling an object of type dict',
    'append_to_ordered_dict': 'adding items to an object of type OrderedDict',
    'setitem_on_list': 'adding items to an object of type list',
    'deep_nesting': 'nested deeper than 100 levels',
    'bytearray_size': 'builtins.bytearray',
    'huge_string': 'truncated or corrupt',
    'not_a_dict': 'holds a dict of',
    'object_dtype_legacy': "dtype 'O8'",
    'uninitialised_storage': 'a call of torch.storage.UntypedStorage',
    'uninitialised_tensor': 'torch.Tensor',
    'getattr_init': "'__init__'",
    'rebuild_from_type': 'torch._tensor._rebuild_from_type_v2',
    'malformed': 'truncated or corrupt',
    'bit_flip': 'Bad CRC-32',
    'compressed': 'is compressed',
    'tar_format': 'tar format',
    'not_a_checkpoint': 'truncated or corrupt',
    'torchscript': 'a TorchScript archive',
    'fifo': 'a FIFO',
    'directory': 'a directory',
    'device': 'a character device',
}
EXPECTED['int_key.pth'] = 'keys that are not names: 0'


def expected(path: str) -> str:
    base = osp.basename(path)
    return EXPECTED.get(base, EXPECTED[base.split('.')[0]])


@pytest.fixture(scope='module')
def hostile_files(tmp_path_factory):
    """{path: what its refusal must say}: the files above, a TorchScript archive, a FIFO, a directory and a
    device."""
    folder = tmp_path_factory.mktemp('hostile')
    for file_name, contents in HOSTILE.items():
        (folder / file_name).write_bytes(contents)
    torch.jit.save(torch.jit.script(torch.nn.Linear(1, 1)), folder / 'torchscript.pth')  # torch.load runs jit.load
    os.mkfifo(folder / 'fifo.pth')
    os.mkfifo(folder / 'fifo.pdparams')
    (folder / 'directory.pth').mkdir()
    paths = [str(folder / name) for name in [*HOSTILE, 'torchscript.pth', 'fifo.pth', 'fifo.pdparams',
                                             'directory.pth']] + \
        ['/dev/null']
    return {path: (EXPECTED['device'] if path == '/dev/null' else expected(path)) for path in paths}


# ---------------------------------------------------------------- running and measuring a child process

# Runs a command and reports its exit status and peak memory. A child's peak (ru_maxrss) includes
# the memory of the process it was forked from, so measuring the tool straight from pytest (gigabytes
# late in the suite) would count pytest's own; this small launcher forks it instead.
MEASURING_LAUNCHER = textwrap.dedent('''
    import os, subprocess, sys, threading
    hang_guard_s, report, *command = sys.argv[1:]
    child = subprocess.Popen(command)
    guard = threading.Timer(float(hang_guard_s), child.kill)
    guard.start()
    _, status, usage = os.wait4(child.pid, 0)
    guard.cancel()
    with open(report, 'w') as file:
        file.write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}')
''')


def run_measured(command, env=None):
    """(exit status or -signal, stdout, stderr, peak memory in KB) of a child process: its own peak, from
    wait4 in a small launcher (:data:`MEASURING_LAUNCHER`), not the largest of all children. Killed at the
    hang guard."""
    with tempfile.TemporaryFile('w+') as stdout, tempfile.TemporaryFile('w+') as stderr, \
            tempfile.NamedTemporaryFile('r') as report:
        subprocess.run([sys.executable, '-c', MEASURING_LAUNCHER, str(HANG_GUARD_S), report.name, *map(str, command)],
                       cwd=ROOT, env=env or tool_environment(), stdout=stdout, stderr=stderr, text=True,
                       timeout=HANG_GUARD_S + 120, check=True)
        code, peak = map(int, report.read().split())
        stdout.seek(0)
        stderr.seek(0)
        return code, stdout.read(), stderr.read(), peak


def assert_one_line_refusal(path: str, message: str, what: str):
    assert path in message and what in message, (path, what, message)
    assert '\n' not in message.strip() and 'Traceback' not in message, message
    assert 'weights_only=False' not in message, message


# ---------------------------------------------------------------- the controls: these files are hostile

def test_the_object_dtype_file_corrupts_memory_when_numpy_unpickles_it(tmp_path):
    """The control: numpy's own unpickling of the 500-byte object-dtype file reads the file's bytes as
    object pointers and the process dies of a signal; so does not the stride-0 file take memory
    until touched, but it claims 40 GB from 4 bytes."""
    path = tmp_path / 'object_dtype.pdparams'
    path.write_bytes(HOSTILE['object_dtype.pdparams'])
    script = f'import pickle\nprint(pickle.load(open({str(path)!r}, "rb"))["w"][0])'
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, timeout=HANG_GUARD_S)
    assert result.returncode == -signal.SIGSEGV, result
    stride_0 = pickle.loads(HOSTILE['stride_0.pdparams'])['w']
    assert stride_0.nbytes == 4 * 10**10 and stride_0.strides == (0, 0)


def test_what_looks_odd_but_is_data_loads(tmp_path):
    """Zero-size, big-endian and Fortran-order arrays, numpy scalars, dtypes and pickle protocol 5
    are data, not hostile: they load, equal to what was saved."""
    meta = dict(empty=np.zeros((0, 5), np.float32), big_endian=np.arange(3, dtype='>i4'), words=np.array(['a', 'bc']),
                fortran=np.asfortranarray(np.arange(6.).reshape(2, 3)), scalar=np.float64(0.5), kind=np.dtype('u2'))
    for protocol in (2, 5):
        path = tmp_path / f'protocol_{protocol}.pth'
        torch.save(dict(meta=meta, state_dict={'w': torch.arange(4.)[1:3]}), path, pickle_protocol=protocol)
        loaded = load_checkpoint_file(str(path))
        for key, value in meta.items():
            assert type(loaded['meta'][key]) is type(value) and np.array_equal(loaded['meta'][key], value), key
            # (numpy itself gives big-endian arrays back in the machine's order from protocol 2, as here.)
            assert np.dtype(getattr(loaded['meta'][key], 'dtype', loaded['meta'][key])).newbyteorder('=') == \
                np.dtype(getattr(value, 'dtype', value)).newbyteorder('='), key
        assert loaded['meta']['fortran'].flags.f_contiguous and torch.equal(loaded['state_dict']['w'],
                                                                             torch.tensor([1., 2.]))


def test_every_checkpoint_error_is_an_mmfocal_error_and_keeps_its_old_base():
    """The tools print an MMFocalError as one line; callers that catch the old bases still catch them."""
    for error, base in ((UnsafeCheckpointError, pickle.UnpicklingError), (IncompleteCheckpointError, RuntimeError),
                        (CheckpointDownloadError, OSError), (CheckpointMismatchError, ValueError),
                        (UnreadableCheckpointError, ValueError)):
        assert issubclass(error, MMFocalError) and issubclass(error, base), error


# ---------------------------------------------------------------- every entry point refuses every file

LIBRARY_DRIVER = textwrap.dedent('''
    """Each file through mmengine's and mmfocal's ways in; one JSON line at the end: what importing mmfocal
    added to torch's allow-list, torch's own verdict on a checkpoint with numpy in it, each file's outcomes."""
    import json, pickle, resource, sys, traceback
    import torch
    allowed = getattr(torch.serialization, 'get_safe_globals', list)  # torch < 2.4 has no such list
    before = allowed()
    import mmfocal
    # (torch adds its own DTensor classes when mmengine imports torch.distributed.tensor.)
    added = [str(entry) for entry in allowed() if entry not in before
             and not (entry[0] if isinstance(entry, tuple) else entry).__module__.startswith('torch.')]
    try:
        torch.load(sys.argv[4], weights_only=True)
        stock = 'loaded'
    except pickle.UnpicklingError:
        stock = 'refused'
    import os
    from mmengine.runner import Runner, load_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader
    from mmfocal import FocalTransformer
    from mmfocal.apis import convert_official_checkpoint, convert_paddle_checkpoint
    from mmfocal.errors import MMFocalError
    files, work_dir, backbone = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    converted = os.path.join(work_dir, 'converted.pth')
    model = FocalTransformer(**backbone)
    runner = Runner(model=model, work_dir=work_dir, default_scope='mmengine', log_level='ERROR')

    ways_in = {
        'CheckpointLoader': lambda path: CheckpointLoader.load_checkpoint(path, map_location='cpu'),
        'load_from': lambda path: load_checkpoint(model, path, map_location='cpu'),
        'init_cfg': lambda path: FocalTransformer(**dict(backbone, init_cfg=dict(type='Pretrained',
                                                                                 checkpoint=path))).init_weights(),
        'resume': lambda path: runner.resume(path),
        # What tools/convert_official_ckpt.py and tools/convert_paddle_ckpt.py run.
        'convert_official_ckpt': lambda path: convert_official_checkpoint(path, converted),
        'convert_paddle_ckpt': lambda path: convert_paddle_checkpoint(path, converted),
    }
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = []
    for path in files:
        for way, load in ways_in.items():
            try:
                load(path)
                outcome = 'LOADED'
            except MMFocalError as error:
                outcome = str(error)
            except BaseException as error:  # what the test reports: anything but one of ours
                outcome = 'UNEXPECTED ' + ''.join(traceback.format_exception(error))
            growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
            outcomes.append([path, way, outcome, growth])
    print(json.dumps(dict(added=added, stock=stock, outcomes=outcomes)))
''')

def run_driver(tmp_path, source: str, *args):
    script = tmp_path / 'driver.py'
    script.write_text(source)
    code, stdout, stderr, peak = run_measured([sys.executable, str(script), *map(str, args)])
    assert code == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1]), peak


def assert_every_refusal(outcomes, hostile_files):
    failures = []
    for path, way, outcome, growth in outcomes:
        # convert_paddle_ckpt reads any file as a .pdparams pickle: a .pth is a zip or a torch pickle to it.
        what = '' if way == 'convert_paddle_ckpt' and not path.endswith('.pdparams') else hostile_files[path]
        try:
            assert_one_line_refusal(path, outcome, what)
            assert growth < MEMORY_BOUND_KB, f'{growth} KB more memory'
        except AssertionError as failure:
            failures.append(f'{osp.basename(path)} via {way}: {failure}')
    assert not failures, '\n'.join(failures)


def test_every_library_entry_point_and_both_converters_refuse_every_hostile_file(hostile_files, tmp_path):
    """``CheckpointLoader``, ``load_from``, ``init_cfg`` Pretrained, ``Runner.resume`` and both converters
    (the library functions the tools run), in one process. And ``import mmfocal`` adds nothing to
    torch's process-wide allow-list: a numpy array in a checkpoint is refused by
    ``torch.load(weights_only=True)`` in that process, as by stock torch."""
    with_numpy = tmp_path / 'numpy.pth'
    torch.save({'meta': {'palette': np.zeros(3)}}, with_numpy)
    result, _ = run_driver(tmp_path, LIBRARY_DRIVER, json.dumps(list(hostile_files)), tmp_path / 'work',
                           json.dumps(TINY_BACKBONE), with_numpy)
    assert result['added'] == [] and result['stock'] == 'refused'
    assert len(result['outcomes']) == 6 * len(hostile_files) and not (tmp_path / 'work' / 'converted.pth').exists()
    assert_every_refusal(result['outcomes'], hostile_files)
    assert isinstance(load_checkpoint_file(str(with_numpy))['meta']['palette'], np.ndarray)


# A tool's own footprint with mmdet loaded (measured: about 1 GB for these four) and the 500 MB margin;
# the stride-0 files would take 40 GB.
TOOL_MEMORY_BOUND_KB = 1536 * 1024


def test_the_tools_stop_with_one_line_and_status_1(hostile_files, demo_workspace, tmp_path):
    """tools/train.py --resume, tools/test.py and convert_paddle_ckpt.py as commands, on representative files
    (the punycode one would keep torch's own weights-only loader busy for minutes); run side by side. (Both
    converters' ``main`` take every file in the test above; they stop through the same exit_on_error.)"""
    def hostile(file_name):
        return next(path for path in hostile_files if path.endswith('/' + file_name))

    config = tmp_path / 'tiny_mask_rcnn.py'
    tiny_detector_test_config(tmp_path / 'work', demo_workspace / 'data' / 'demo').dump(str(config))
    commands = {
        hostile('object_dtype.pdparams'): tool_command('convert_paddle_ckpt.py', hostile('object_dtype.pdparams'),
                                                       tmp_path / 'out.pth'),
        hostile('punycode.pth'): tool_command('train.py', config, '--work-dir', tmp_path / 'work', '--resume',
                                              hostile('punycode.pth')),
        hostile('object_dtype.pth'): tool_command('test.py', config, hostile('object_dtype.pth'), '--work-dir',
                                                  tmp_path / 'work'),
    }
    results = {}
    runs = [threading.Thread(target=lambda path, command: results.update({path: run_measured(command)}),
                             args=item) for item in commands.items()]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    for path, (code, _, stderr, peak) in results.items():
        assert code == 1, (commands[path][1], code, stderr[-3000:])
        assert_one_line_refusal(path, stderr.strip().splitlines()[-1], hostile_files[path])
        assert 'Traceback' not in stderr and peak < TOOL_MEMORY_BOUND_KB, (commands[path][1], peak)
    assert not (tmp_path / 'out.pth').exists()
