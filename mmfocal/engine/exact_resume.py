"""Exact resume: a run killed and resumed from a checkpoint continues as the uninterrupted run.

mmengine's ``resume`` restores the weights, the optimizer, the parameter schedulers, the message
hub and the iteration counter; it does not restore what decides the *rest* of the run besides
these: the random number generators (data augmentation, drop path, RoI sampling) of every process,
and the data workers' random streams. A resumed run therefore learns something else from the
batches after the checkpoint than the interrupted run would have.

:class:`ExactResumeHook` closes that gap without changing mmengine's code. After every training
iteration (point ``P``, before :class:`~mmengine.hooks.CheckpointHook` saves) it captures the
generators of its process; every checkpoint then carries the states of all ranks (gathered to
rank 0, which alone writes). Where the next batch is drawn (point ``R``) the captured state is put
back: in the uninterrupted run its own, in a resumed run the checkpoint's. So whatever runs
between ``P`` and ``R`` (the other hooks, validation, the checkpoint write, or in a resumed
process the whole start-up) leaves no trace in what follows.

* ``IterBasedTrainLoop``: ``R`` is each fetch from ``dataloader_iterator``. On resume, mmengine
  replays the loader over the batches already trained (that moves ``InfiniteSampler`` to its
  position and takes data workers through the same draws as before); the state goes back after
  that replay.
* ``EpochBasedTrainLoop``: ``R`` is the start of each epoch (before the loader's iterator draws its
  seed and starts workers) and each fetch. Data workers start afresh every epoch, seeded from
  (seed, rank, worker, epoch), so that a resumed epoch's workers draw what the uninterrupted
  run's drew (persistent workers would carry their streams across epochs, which a new process
  cannot reproduce). Resumed from a checkpoint written inside an epoch (``CheckpointHook`` with
  ``by_epoch=False``), the epoch's batches already trained are replayed, not trained again as
  mmengine alone would; the loop's ``batch_idx`` then counts from the resume point for the rest
  of that epoch (only log lines show it).

The state is stored under ``checkpoint['exact_resume']`` as tensors and plain numbers, so it adds
nothing that mmfocal's checkpoint unpickler (:mod:`mmfocal.engine.safe_load`) would refuse. A
resume that cannot be exact (a checkpoint written without the hook, another number of processes,
data workers or batch size, an entry that is not what the hook writes) continues as mmengine
resumes, with one warning saying so. On GPUs, kernels that are not deterministic can still make
runs differ, interrupted or not.
"""
import functools
import logging
import random
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.dataset import worker_init_fn as mmengine_worker_init_fn
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

__all__ = ['ExactResumeHook', 'STATE_KEY', 'capture_random_state', 'restore_random_state',
           'enable_exact_resume', 'disable_exact_resume']

STATE_KEY = 'exact_resume'
FORMAT = 1


# --- Random states as tensors (the weights-only loader accepts tensors, numbers, strings) ---------

def capture_random_state() -> Dict[str, Any]:
    """This process's torch (CPU and every CUDA device), numpy and Python generators, as tensors.

    Returns:
        dict[str, Any]: The generators' states, as tensors and plain numbers.
    """
    _, numpy_keys, numpy_position, numpy_has_gauss, numpy_cached_gaussian = np.random.get_state()
    python_version, python_internal, python_gauss_next = random.getstate()
    return dict(
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        numpy_keys=torch.from_numpy(numpy_keys.astype(np.int64)),
        numpy_position=int(numpy_position),
        numpy_has_gauss=int(numpy_has_gauss),
        numpy_cached_gaussian=float(numpy_cached_gaussian),
        python_version=int(python_version),
        python_internal=torch.tensor(python_internal, dtype=torch.int64),
        python_gauss_next=python_gauss_next)


def _cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def restore_random_state(state: Dict[str, Any]) -> None:
    """Put back what :func:`capture_random_state` captured.

    The process must see as many CUDA devices as the one that captured the state.

    Args:
        state (dict[str, Any]): A state from :func:`capture_random_state`; its tensors may be on
            any device.
    """
    torch.set_rng_state(state['torch'].cpu())
    if state['cuda']:
        torch.cuda.set_rng_state_all([generator.cpu() for generator in state['cuda']])
    np.random.set_state(('MT19937', state['numpy_keys'].cpu().numpy().astype(np.uint32),
                         state['numpy_position'], state['numpy_has_gauss'], state['numpy_cached_gaussian']))
    random.setstate((state['python_version'], tuple(state['python_internal'].tolist()),
                     state['python_gauss_next']))


# --- Data loading ---------------------------------------------------------------------------------

def _mmengine_worker_seeding(loader) -> Optional[dict]:
    """The keywords of mmengine's default worker seeding (num_workers, rank, seed, ...), or None
    if the loader has no workers or seeds them some other way."""
    init = getattr(loader, 'worker_init_fn', None)
    if loader.num_workers == 0 or not isinstance(init, functools.partial) or \
            init.func is not mmengine_worker_init_fn:
        return None
    return dict(init.keywords)


def _worker_seeds(seeding: Optional[dict]) -> List[int]:
    """The seeds mmengine starts the workers from: worker w of rank r gets seed + r * workers + w."""
    if seeding is None:
        return []
    return [seeding['seed'] + seeding['rank'] * seeding['num_workers'] + worker
            for worker in range(seeding['num_workers'])]


class _RestoringIterator:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator``. The first ``replayed`` batches
    are mmengine's replay after a resume (the loop fetches and drops them); before each batch
    after those, the hook's captured state is put back."""

    def __init__(self, iterator, hook: 'ExactResumeHook', replayed: int):
        self.iterator = iterator
        self.hook = hook
        self.replayed = replayed

    def __iter__(self):
        return self

    def __next__(self):
        if self.replayed > 0:
            self.replayed -= 1
            return next(self.iterator)
        return self.hook._fetch(self.iterator)


class _RestoringLoader:
    """Stands in for ``EpochBasedTrainLoop.dataloader`` (everything else is the loader's own).

    Each epoch it puts back the captured state before the loader's iterator is made (which draws
    a seed and starts the workers) and before each batch. After a resume from the middle of an
    epoch, it first replays the batches of that epoch already trained (fetched and dropped, as
    mmengine's IterBasedTrainLoop does), so the sampler and the workers are where they were.
    """

    def __init__(self, loader, hook: 'ExactResumeHook', runner):
        self.loader = loader
        self.hook = hook
        self.runner = runner
        self.replayed = 0

    _OWN = ('loader', 'hook', 'runner', 'replayed')

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __setattr__(self, name, value):
        # Hooks that reconfigure the loader (mmdet's PipelineSwitchHook) reach the real one.
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.loader, name, value)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        replayed, self.replayed = self.replayed, 0
        if not replayed:
            self.hook._restore_pending()
        self.hook._restart_workers(self.loader, self.runner.epoch)
        iterator = iter(self.loader)
        for _ in range(replayed):
            next(iterator)
        while True:
            try:
                batch = self.hook._fetch(iterator)
            except StopIteration:
                return
            yield batch


# --- The hook -------------------------------------------------------------------------------------

class ExactResumeHook(Hook):
    """Carry every rank's random state and the data position through checkpoints, so that a
    resumed run ends where the uninterrupted run ends (see the module's docstring).

    ``tools/train.py`` adds it to every config (``--no-exact-resume`` leaves it out); elsewhere,
    name it in ``custom_hooks``: ``custom_hooks = [dict(type='ExactResumeHook')]``.

    Its priority (LOW) runs its ``after_train_iter`` (the capture) before ``CheckpointHook``
    (VERY_LOW) saves.
    """

    priority = 'LOW'

    def __init__(self):
        self._pending: Optional[Dict[str, Any]] = None  # this rank's state, to put back at R
        self._gathered: Optional[List[Dict[str, Any]]] = None  # every rank's, on rank 0
        self._gathered_iteration: Optional[int] = None  # the checkpoint 'iter' they belong to
        self._loaded: Optional[dict] = None  # what a loaded checkpoint carried
        self._worker_seeding: Optional[dict] = None  # the loader's own, before any epoch's shift

    def _data_position(self, runner) -> Dict[str, Any]:
        """What decides which batches come next and what the data workers draw for them: the
        sampler's position follows from the iteration and the batch size (mmengine's samplers
        are seeded, DefaultSampler by epoch), the workers' streams from their seeds."""
        loader = runner.train_loop.dataloader
        return dict(batch_size=int(loader.batch_size or 0), num_workers=int(loader.num_workers),
                    worker_seeds=torch.tensor(_worker_seeds(self._worker_seeding), dtype=torch.int64))

    # Capture (P) -----------------------------------------------------------------------------

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Capture this rank's random state and data position (point ``P``), gathered to rank 0.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the current batch in the train loop.
            data_batch (dict or tuple or list, optional): Data from the dataloader. Defaults to None.
            outputs (dict, optional): Outputs from the model. Defaults to None.
        """
        # mmengine records a checkpoint written after this iteration (by CheckpointHook now, at
        # the end of the epoch, or after validation) with meta 'iter' = runner.iter + 1.
        iteration = int(runner.iter) + 1
        state = dict(capture_random_state(), iteration=iteration, epoch=int(runner.epoch),
                     **self._data_position(runner))
        self._pending = state
        _, world_size = get_dist_info()
        if world_size > 1:
            # Only rank 0 writes checkpoints (Runner.save_checkpoint is master_only, so
            # before_save_checkpoint runs there alone): every rank sends its state now.
            self._gathered = [_to_cpu(rank_state) for rank_state in all_gather_object(state)]
        else:
            self._gathered = [state]
        self._gathered_iteration = iteration

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add every rank's state of this iteration to the checkpoint, under ``STATE_KEY``.

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The checkpoint about to be saved; changed in place.
        """
        if self._gathered is not None and checkpoint.get('meta', {}).get('iter') == self._gathered_iteration:
            checkpoint[STATE_KEY] = dict(format=FORMAT, world_size=len(self._gathered), ranks=self._gathered)

    # Restore (R) -----------------------------------------------------------------------------

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep what the loaded checkpoint carried, for :meth:`before_train` to restore.

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The loaded checkpoint.
        """
        # Also called for load_from (fine-tuning); before_train tells the two apart by position.
        meta = checkpoint.get('meta', {})
        self._loaded = dict(state=checkpoint.get(STATE_KEY), iteration=meta.get('iter'), epoch=meta.get('epoch'))

    def before_train(self, runner) -> None:
        """Take the resumed state and wrap the loop's loader so the state goes back at point ``R``.

        Args:
            runner (Runner): The runner of the training process.
        """
        loop = runner.train_loop
        if not isinstance(loop, (EpochBasedTrainLoop, IterBasedTrainLoop)):
            _warn(f'ExactResumeHook supports mmengine\'s EpochBasedTrainLoop and IterBasedTrainLoop, not '
                  f'{type(loop).__name__}: a resumed run will not continue exactly as the interrupted one')
            return
        self._worker_seeding = _mmengine_worker_seeding(loop.dataloader)
        loaded, self._loaded = self._loaded, None
        if loaded is not None and loop.iter > 0 and loaded['iteration'] == loop.iter:
            self._pending = self._state_to_restore(runner, loaded)
        if isinstance(loop, IterBasedTrainLoop):
            # The loop replays loop.iter batches after before_train_epoch; the state goes back after.
            loop.dataloader_iterator = _RestoringIterator(loop.dataloader_iterator, self, replayed=loop.iter)
        else:
            loop.dataloader = _RestoringLoader(loop.dataloader, self, runner)
            # Resumed in the middle of an epoch: mmengine restarts the epoch at its first batch;
            # replay the batches it already trained instead of training them again.
            loop.dataloader.replayed = loop.iter - loop.epoch * len(loop.dataloader)

    def after_train(self, runner) -> None:
        """Give the epoch-based loop its own loader back.

        Args:
            runner (Runner): The runner of the training process.
        """
        loop = runner.train_loop
        if isinstance(getattr(loop, 'dataloader', None), _RestoringLoader):
            loop.dataloader = loop.dataloader.loader

    def _state_to_restore(self, runner, loaded: dict) -> Optional[Dict[str, Any]]:
        """This rank's state from the resumed checkpoint, or None (with one warning) if the
        checkpoint cannot continue the run exactly: written without the hook, by another setup, or
        with an entry that is not what the hook writes (damaged or made by hand)."""
        not_exact = ('training continues from the checkpoint, but not exactly as the interrupted run '
                     'would have (random numbers and data differ from there on)')
        content = loaded['state']
        if content is None:
            _warn(f'the checkpoint has no exact-resume state (it was written without ExactResumeHook, '
                  f'for instance by an older mmfocal): {not_exact}')
            return None
        current = self._data_position(runner)
        try:
            state, difference = _matching_state(content, current)
            if difference is None:
                _check_restorable(state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            reason = (str(error).splitlines() or [''])[0]
            _warn(f"the checkpoint's exact-resume state ({STATE_KEY}) is malformed ({type(error).__name__}: "
                  f'{reason}): {not_exact}')
            return None
        if difference is not None:
            _warn(f'{difference}: {not_exact}')
            return None
        return state

    def _restore_pending(self) -> Optional[Dict[str, Any]]:
        state, self._pending = self._pending, None
        if state is not None:
            restore_random_state(state)
        return state

    def _fetch(self, iterator):
        """The next batch, drawn from the state captured after the previous iteration."""
        state = self._restore_pending()
        try:
            return next(iterator)
        except StopIteration:
            # The epoch is over: the state is put back again where the next epoch starts.
            self._pending = state
            raise

    def _restart_workers(self, loader, epoch: int) -> None:
        """Give an epoch fresh data workers seeded from (seed, rank, worker, epoch), as a resumed
        process would start them."""
        seeding = self._worker_seeding
        if seeding is None:
            return
        _, world_size = get_dist_info()
        # mmengine seeds worker w of rank r with seed + r * workers + w; each epoch shifts all of
        # them past every seed of the epoch before, so no two (rank, worker, epoch) share one.
        epoch_seed = seeding['seed'] + epoch * seeding['num_workers'] * world_size
        loader.worker_init_fn = functools.partial(mmengine_worker_init_fn, **dict(seeding, seed=epoch_seed))
        if loader.persistent_workers:
            # torch keeps persistent workers (and their random streams) in the loader's iterator;
            # dropping it makes the epoch's iteration start new workers, which the old iterator's
            # finaliser shuts down.
            loader._iterator = None


def _to_cpu(state: Dict[str, Any]) -> Dict[str, Any]:
    return {key: (value.cpu() if isinstance(value, torch.Tensor)
                  else [item.cpu() for item in value] if key == 'cuda' else value)
            for key, value in state.items()}


def _matching_state(content: dict, current: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(this rank's state in a checkpoint's exact-resume ``content``, None), or (None, what differs
    between the interrupted run's setup and this one's). Raises what indexing a malformed entry
    raises (KeyError, IndexError, TypeError, ...)."""
    rank, world_size = get_dist_info()
    if content['world_size'] != world_size:
        return None, f"the checkpoint was written by {content['world_size']} processes, this run has {world_size}"
    state = content['ranks'][rank]
    if len(state['cuda']) != _cuda_devices():
        return None, (f"the interrupted run's processes saw {len(state['cuda'])} CUDA devices each, this run's "
                      f'see {_cuda_devices()}')
    for key, what in (('batch_size', 'batch size'), ('num_workers', 'number of data workers'),
                      ('worker_seeds', "data workers' seeds")):
        saved, now = state[key], current[key]
        same = torch.equal(saved.cpu(), now) if isinstance(now, torch.Tensor) else saved == now
        if not same:
            return None, f"the {what} differs from the interrupted run's ({_plain(saved)} then, {_plain(now)} now)"
    return state, None


def _check_restorable(state: Dict[str, Any]) -> None:
    """Raise what :func:`restore_random_state` would raise on ``state`` later, in the middle of
    training; the generators are left as they are."""
    current = capture_random_state()
    try:
        restore_random_state(state)
    finally:
        restore_random_state(current)


def _plain(value):
    return value.tolist() if isinstance(value, torch.Tensor) else value


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def enable_exact_resume(cfg) -> None:
    """Add :class:`ExactResumeHook` to ``cfg.custom_hooks`` unless the config names it already.

    Args:
        cfg (Config): The config to change in place.
    """
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(hook.get('type') in ('ExactResumeHook', ExactResumeHook) for hook in hooks):
        hooks.append(dict(type='ExactResumeHook'))
    cfg.custom_hooks = hooks


def disable_exact_resume(cfg) -> None:
    """Remove :class:`ExactResumeHook` from ``cfg.custom_hooks``.

    Args:
        cfg (Config): The config to change in place.
    """
    cfg.custom_hooks = [hook for hook in (cfg.get('custom_hooks') or [])
                        if hook.get('type') not in ('ExactResumeHook', ExactResumeHook)]
