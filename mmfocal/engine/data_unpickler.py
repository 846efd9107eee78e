"""The project's own unpickler: a checkpoint's pickle is read as data, with checked numpy builders.

A pickle names the objects it builds and the functions it calls; :class:`DataUnpickler` resolves
only the names of a given table (:class:`Allowed`), calls only its callables, creates instances of
only its classes, and fills (``BUILD``) only what it knows. Every other opcode that can run code
(``INST``, ``OBJ``, ``NEWOBJ_EX``, the copyreg extension codes) is refused, as is appending to or
setting items of anything but a plain list, dict or set. It reads pickle protocols 0 to 5 on any
torch; both ``.pth`` files (as ``torch.load``'s ``pickle_module``) and PaddleViT ``.pdparams`` files
go through it (:mod:`mmfocal.engine.safe_load`, :mod:`mmfocal.engine.pdparams`).

numpy's own unpickling trusts its input: a pickled dtype carries its flags (an object dtype without
``NPY_LIST_PICKLE`` makes numpy read file bytes as object pointers), and ``numpy.ndarray(...)``
takes any strides (stride 0 turns 4 bytes into gigabytes). So no numpy name resolves to numpy
itself. ``numpy.dtype`` resolves to :func:`numpy_dtype`, which accepts plain numbers, booleans and
fixed-size strings (``b1``, ``i1``-``i8``, ``u1``-``u8``, ``f2``-``f8``, ``c8``, ``c16``, ``U<n>``,
``S<n>``) and takes only the byte order from the pickled state, never flags, fields or subarrays.
``_reconstruct`` returns an empty :class:`PendingArray` whose ``BUILD`` checks the shape and that
the bytes are exactly ``prod(shape) * itemsize`` before the array is made from them;
one never filled is refused, so no array holds memory the file did not write. ``scalar`` and
protocol 5's ``_frombuffer`` are checked the same way. Strings encoded to bytes (``_codecs.encode``,
``bytearray``) are accepted in latin-1 only, which is what pickle protocol 2 writes: other codecs
are refused (punycode, for one, takes minutes of CPU on a few hundred kilobytes).
"""
import _compat_pickle
import math
import pickle
import re
from collections import Counter, OrderedDict
from typing import Callable, Dict, Iterable, Mapping, Optional

import numpy as np

__all__ = ['RefusedObject', 'Allowed', 'DataUnpickler', 'PendingArray', 'PendingDtype', 'NUMPY_GLOBALS',
           'STRING_GLOBALS', 'latin1_encode', 'checked_bytearray', 'empty_bytes']

# Deeper nesting than this is no checkpoint's; refused rather than risking a RecursionError later.
MAX_DEPTH = 100
_LATIN1 = ('latin1', 'latin-1', 'latin_1', 'iso-8859-1', 'iso8859-1', 'l1')
# The dtypes a checkpoint's arrays have (numpy's names without byte order, as a pickled dtype gives them).
_DATA_DTYPE = re.compile(r'^(b1|[iu][1248]|f[248]|c8|c16|[US][1-9][0-9]{0,8})$')
_BYTE_ORDERS = ('<', '>', '=', '|')


class RefusedObject(pickle.UnpicklingError):
    """The pickle names or builds something that is not checkpoint data; ``name`` says what."""

    def __init__(self, name: str, detail: str = ''):
        self.name = name
        self.detail = detail
        super().__init__(f'{name}: {detail}' if detail else name)


# ---------------------------------------------------------------- strings

def latin1_encode(text, encoding='latin1', errors='strict'):
    """``_codecs.encode`` as pickle protocol 2 uses it (bytes written as latin-1 text), nothing else.

    Args:
        text (str): The text the pickle stored the bytes as.
        encoding (str): The codec; only latin-1 and its aliases are accepted. Defaults to 'latin1'.
        errors (str): The error handler; only 'strict' is accepted. Defaults to 'strict'.

    Returns:
        bytes: ``text`` encoded as latin-1.

    Raises:
        RefusedObject: For any other argument types, codec or error handler.
    """
    if type(text) is not str or type(encoding) is not str or encoding.lower() not in _LATIN1 or errors != 'strict':
        raise RefusedObject('_codecs.encode', f'bytes are written as latin-1 text; this asks for encoding '
                            f'{str(encoding)[:40]!r} of a {type(text).__name__}')
    return text.encode('latin-1')


def checked_bytearray(*args):
    """``bytearray`` as pickle writes one: empty, from bytes, or from latin-1 text; never a size."""
    if not args:
        return bytearray()
    if len(args) == 1 and type(args[0]) is bytes:
        return bytearray(args[0])
    if len(args) == 2:
        return bytearray(latin1_encode(*args))
    raise RefusedObject('builtins.bytearray', f'made from {", ".join(type(a).__name__ for a in args)}: only '
                        'bytes or latin-1 text make a stored bytearray')


def empty_bytes(*args):
    """``bytes``, as pickle protocol 2 writes an empty bytes object (``bytes()``); nothing else."""
    if args:
        raise RefusedObject('builtins.bytes', 'called with arguments: pickle writes only an empty bytes that way')
    return b''


STRING_GLOBALS = {'_codecs.encode': latin1_encode, 'builtins.bytearray': checked_bytearray,
                  'builtins.bytes': empty_bytes}


# ---------------------------------------------------------------- numpy

class PendingDtype:
    """What ``numpy.dtype(name, align, copy)`` unpickles to: a plain data dtype; its ``BUILD`` sets the byte order."""
    __slots__ = ('dtype', )

    def __init__(self, name, align=False, copy=True):
        if type(name) is not str or not _DATA_DTYPE.match(name):
            raise RefusedObject('numpy.dtype', f'dtype {str(name)[:40]!r}: only numbers, booleans and fixed-size '
                                'strings are checkpoint data (no object, structured, float128 or void dtypes)')
        self.dtype = np.dtype(name)

    def fill(self, state):
        """Apply a dtype's pickled state (its ``BUILD``): the byte order only.

        Args:
            state (tuple): numpy's dtype state, ``(version, byte order, subarray, names, fields, ...)``.

        Raises:
            RefusedObject: If the state is not a tuple of that form, or declares fields, names or a
                subarray.
        """
        # numpy's state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata]).
        if type(state) is not tuple or len(state) < 5 or state[1] not in _BYTE_ORDERS \
                or any(part is not None for part in state[2:5]):
            raise RefusedObject('numpy.dtype', f'the state of dtype {self.dtype}: only a byte order, no fields, '
                                'names or subarray')
        if state[1] in '<>' and self.dtype.itemsize > 1 and self.dtype.kind not in 'S':
            self.dtype = self.dtype.newbyteorder(state[1])


def _dtype_of(value, what: str) -> np.dtype:
    if not isinstance(value, PendingDtype):
        raise RefusedObject(what, f'its dtype is a {type(value).__name__}, not a numpy.dtype of the file')
    return value.dtype


def _shape_of(shape, what: str) -> tuple:
    if type(shape) is not tuple or len(shape) > 32 or any(type(n) is not int or not 0 <= n < 2**48 for n in shape):
        raise RefusedObject(what, f'shape {str(shape)[:80]}: at most 32 non-negative integer sizes')
    if math.prod(n for n in shape if n) >= 2**48:
        raise RefusedObject(what, f'shape {shape} is larger than any array')
    return shape


def _array_from_bytes(raw, dtype: np.dtype, shape: tuple, fortran: bool, what: str) -> np.ndarray:
    """``raw`` as an array, after checking that its length is exactly what shape and dtype declare."""
    if type(raw) not in (bytes, bytearray):
        raise RefusedObject(what, f'its data is a {type(raw).__name__}, not bytes')
    declared = math.prod(shape) * dtype.itemsize
    if len(raw) != declared:
        raise RefusedObject(what, f'shape {shape} of {dtype} declares {declared} bytes, the file holds {len(raw)}')
    if type(raw) is bytearray:  # protocol 5 writes a writable buffer: the array shares it
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order='F' if fortran else 'C')
    # numpy's own unpickling, now that dtype, shape and size are checked: the array keeps the bytes
    # (no copy, so a file's data is in memory at most twice while it loads, as with pickle itself).
    array = np.empty(0, dtype=dtype)
    array.__setstate__((1, shape, dtype, fortran, raw))
    return array


class NdarrayName:
    """What the name ``numpy.ndarray`` resolves to: a marker for ``_reconstruct``, not a callable class."""


NDARRAY = NdarrayName()


class PendingArray:
    """What ``_reconstruct(ndarray, shape, typecode)`` unpickles to; its ``BUILD`` makes the checked array."""
    __slots__ = ('array', )

    def __init__(self):
        self.array = None

    def fill(self, state):
        """Make the array from its pickled state (its ``BUILD``), after checking dtype, shape and size.

        Args:
            state (tuple): ``([version, ]shape, dtype, fortran order, data)`` as numpy pickles it.

        Raises:
            RefusedObject: If the state has another form, the array is filled twice, or the data's
                length is not what the shape and dtype declare.
        """
        what = 'numpy.ndarray'
        if type(state) is not tuple or len(state) not in (4, 5):
            raise RefusedObject(what, 'its state is not (version, shape, dtype, fortran order, data)')
        shape, dtype, fortran, raw = state[-4:]
        if self.array is not None or type(fortran) is not bool:
            raise RefusedObject(what, 'filled twice, or a fortran-order flag that is not a bool')
        self.array = _array_from_bytes(raw, _dtype_of(dtype, what), _shape_of(shape, what), fortran, what)


def numpy_reconstruct(cls, shape, typecode):
    """``numpy.core.multiarray._reconstruct``: an empty placeholder, filled (checked) by the pickle's BUILD.

    Args:
        cls (NdarrayName): What the pickle named as the class; only ``numpy.ndarray`` is accepted.
        shape (tuple): The placeholder shape numpy pickles (unused: the state carries the real one).
        typecode (bytes): The placeholder type code numpy pickles (unused).

    Returns:
        PendingArray: The placeholder the following ``BUILD`` fills.

    Raises:
        RefusedObject: If ``cls`` is not ``numpy.ndarray``.
    """
    if cls is not NDARRAY:
        raise RefusedObject('numpy.core.multiarray._reconstruct', f'of {type(cls).__name__}: only of numpy.ndarray')
    return PendingArray()


def numpy_scalar(dtype, raw=None):
    """``numpy.core.multiarray.scalar(dtype, bytes)``: one value, its bytes exactly the dtype's size.

    Args:
        dtype (PendingDtype): The dtype the pickle built.
        raw (bytes, optional): The value's bytes. Defaults to None (refused).

    Returns:
        numpy.generic: The scalar.

    Raises:
        RefusedObject: If ``dtype`` is not a dtype of the file or ``raw`` is not bytes of its size.
    """
    what = 'numpy.core.multiarray.scalar'
    return _array_from_bytes(raw, _dtype_of(dtype, what), (), False, what)[()]


def numpy_frombuffer(buffer, dtype, shape, order):
    """``numpy.core.numeric._frombuffer``, which pickle protocol 5 writes for arrays: checked the same way.

    Args:
        buffer (bytes | bytearray): The array's data.
        dtype (PendingDtype): The dtype the pickle built.
        shape (tuple[int]): The array's shape.
        order (str): 'C' or 'F'.

    Returns:
        numpy.ndarray: The array over ``buffer``.

    Raises:
        RefusedObject: If the order, dtype or shape is not allowed, or the buffer's length is not
            what the shape and dtype declare.
    """
    what = 'numpy.core.numeric._frombuffer'
    if order not in ('C', 'F'):
        raise RefusedObject(what, f'order {str(order)[:10]!r}')
    return _array_from_bytes(buffer, _dtype_of(dtype, what), _shape_of(shape, what), order == 'F', what)


# numpy 2 writes numpy._core where numpy 1 writes numpy.core; both names resolve to the same builders.
NUMPY_GLOBALS = {'numpy.ndarray': NDARRAY, 'numpy.dtype': PendingDtype}
for _core in ('numpy.core', 'numpy._core'):
    NUMPY_GLOBALS.update({f'{_core}.multiarray._reconstruct': numpy_reconstruct,
                          f'{_core}.multiarray.scalar': numpy_scalar,
                          f'{_core}.numeric._frombuffer': numpy_frombuffer})


# ---------------------------------------------------------------- the unpickler

class Allowed:
    """What a pickle may name, call, instantiate and fill.

    Args:
        names (Mapping[str, object]): ``'module.name'`` to the object that name resolves to.
        callables (Iterable): Which of those a pickle may call (``REDUCE``); the builders above are
            always callable. Defaults to ().
        classes (Iterable): Which classes it may instantiate without calling (``NEWOBJ``), to fill
            by ``BUILD`` with a dict of attributes. Defaults to ().
        persistent_ids (bool): Whether torch's storage references (``('storage', ...)``) are
            allowed. Defaults to False.
    """

    def __init__(self, names: Mapping[str, object], callables: Iterable = (), classes: Iterable = (),
                 persistent_ids: bool = False):
        self.names = dict(names)
        builders = [*STRING_GLOBALS.values(), *NUMPY_GLOBALS.values()]
        self.callables = {id(obj): obj for obj in [*callables, *builders] if obj is not NDARRAY}
        self.classes = tuple(classes)
        self.persistent_ids = persistent_ids


def _refuse_opcode(name: str) -> Callable:
    def refuse(self):
        raise RefusedObject(f'pickle opcode {name}', 'it creates objects by calling classes')
    return refuse


class DataUnpickler(pickle._Unpickler):
    """pickle's own (pure-Python) unpickler with every way to run code checked against :attr:`allowed`.

    Args:
        file (IO[bytes]): The pickle, opened for reading in binary mode.
        **kwargs: pickle.Unpickler's (``encoding``, ...).

    Attributes:
        allowed (Allowed): What the pickle may name, call and build (a subclass sets it).
    """
    allowed = Allowed({})

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch.update({getattr(pickle, opcode)[0]: _refuse_opcode(opcode)
                     for opcode in ('INST', 'OBJ', 'NEWOBJ_EX', 'EXT1', 'EXT2', 'EXT4')})

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._pending = []

    def find_class(self, module, name):
        """Resolve a global the pickle names, only from :attr:`allowed`.

        Python 2 names are mapped to Python 3 ones first, as pickle does.

        Args:
            module (str): The module part of the name.
            name (str): The name within the module.

        Returns:
            object: What ``allowed.names`` maps ``'module.name'`` to.

        Raises:
            RefusedObject: If the name is not allowed, or either part is not a str.
        """
        if type(module) is not str or type(name) is not str:
            raise RefusedObject(f'a global named by {type(module).__name__} and {type(name).__name__}')
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return self.allowed.names[f'{module}.{name}']
        except KeyError:
            raise RefusedObject(f'{module}.{name}') from None

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self.allowed.callables or type(args) is not tuple:
            raise RefusedObject(f'a call of {_describe(func)}', 'only the allowed functions are called')
        result = func(*args)
        if isinstance(result, (PendingArray, PendingDtype)):
            self._pending.append(result)
        self.stack[-1] = result
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if not any(cls is allowed for allowed in self.allowed.classes) or type(args) is not tuple:
            raise RefusedObject(f'an instance of {_describe(cls)}', 'only the allowed classes are created')
        self.append(cls.__new__(cls, *args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (PendingArray, PendingDtype)):
            inst.fill(state)
        elif type(inst) in (OrderedDict, *self.allowed.classes) and _is_attribute_dict(state):
            inst.__dict__.update(state)  # an instance of an allowed data class, or torch's OrderedDict rule
        else:
            raise RefusedObject(f'filling {_describe(inst)}', 'with a state other than a dict of attributes')
    dispatch[pickle.BUILD[0]] = load_build

    def load_append(self):
        item = self.stack.pop()  # first: the list is below it
        self._container_top(list).append(item)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        items = self.pop_mark()
        self._container_top(list).extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._container_top(dict)[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        target = self._container_top(dict)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self):
        items = self.pop_mark()
        self._container_top(set).update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def _container_top(self, kind):
        target = self.stack[-1]
        allowed = {list: (list, ), dict: (dict, OrderedDict, Counter), set: (set, )}[kind]
        if type(target) not in allowed:
            raise RefusedObject(f'adding items to {_describe(target)}', f'only to a plain {kind.__name__}')
        return target

    def load_binpersid(self):
        pid = self.stack.pop()
        self.append(self._persistent(pid))
    dispatch[pickle.BINPERSID[0]] = load_binpersid

    def load_persid(self):
        raise RefusedObject('a text persistent id', 'torch writes binary ones')
    dispatch[pickle.PERSID[0]] = load_persid

    def _persistent(self, pid):
        # torch's zip format refers to a tensor's storage as ('storage', storage type, key, location, numel).
        kind = pid[0].decode('ascii', 'replace') if type(pid) is tuple and pid and type(pid[0]) is bytes else \
            (pid[0] if type(pid) is tuple and pid else None)
        if not self.allowed.persistent_ids or kind != 'storage':
            raise RefusedObject(f'persistent id {str(pid)[:80]}', 'only references to torch storages are allowed')
        return self.persistent_load(pid)

    def load(self):
        result = super().load()
        unfilled = [p for p in self._pending if isinstance(p, PendingArray) and p.array is None]
        if unfilled:
            raise RefusedObject('numpy.ndarray', f'{len(unfilled)} array(s) declared and never filled: '
                                'their memory would hold whatever was there before')
        return resolve_placeholders(result, self.allowed.classes)


def _describe(obj) -> str:
    if obj is NDARRAY:
        return 'numpy.ndarray (a class no checkpoint calls)'
    if isinstance(obj, type) or callable(obj) and isinstance(getattr(obj, '__qualname__', None), str):
        return f'{obj.__module__}.{obj.__qualname__}'
    return f'an object of type {type(obj).__name__}'


def _is_attribute_dict(state) -> bool:
    return type(state) is dict and all(type(key) is str for key in state)


def resolve_placeholders(value, classes: tuple = (), depth: int = 0, seen: Optional[Dict[int, object]] = None):
    """Replace each :class:`PendingArray` and :class:`PendingDtype` in ``value`` by its array or dtype.

    Containers are walked: dicts (and an OrderedDict's attributes, where torch keeps a state dict's
    ``_metadata``), lists, tuples and the attributes of instances of ``classes``. Dicts, lists and
    instances are changed in place; a tuple that holds a placeholder is rebuilt.

    Args:
        value (object): The unpickled object.
        classes (tuple[type]): The allowed data classes whose attributes are walked too.
            Defaults to ().
        depth (int): How deep ``value`` is in the whole object (for the recursion). Defaults to 0.
        seen (dict[int, object], optional): What each container already walked resolved to, by
            ``id`` (for the recursion, so shared and cyclic containers are walked once).
            Defaults to None.

    Returns:
        object: ``value`` with its placeholders replaced.

    Raises:
        RefusedObject: If containers are nested deeper than ``MAX_DEPTH``.
    """
    seen = {} if seen is None else seen
    if isinstance(value, PendingArray):
        return value.array
    if isinstance(value, PendingDtype):
        return value.dtype
    if id(value) in seen:
        return seen[id(value)]
    if depth > MAX_DEPTH:
        raise RefusedObject('nested containers', f'nested deeper than {MAX_DEPTH} levels: no checkpoint is')
    seen[id(value)] = value
    if type(value) is tuple:
        resolved = tuple(resolve_placeholders(item, classes, depth + 1, seen) for item in value)
        if any(new is not old for new, old in zip(resolved, value)):
            seen[id(value)] = resolved
            return resolved
    elif isinstance(value, (dict, list)):
        for key, item in list(value.items() if isinstance(value, dict) else enumerate(value)):
            value[key] = resolve_placeholders(item, classes, depth + 1, seen)
        if type(value) is OrderedDict:
            resolve_placeholders(vars(value), classes, depth + 1, seen)
    elif type(value) in classes:
        resolve_placeholders(vars(value), classes, depth + 1, seen)
    return value
