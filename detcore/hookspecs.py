"""Hook specifications: the whole contract between detcore and its plugins.

A plugin is a module (or an object) with functions named like the specs below
and decorated with ``@detcore.hookimpl``. It reaches detcore in one of three
ways:

* an entry point in the ``detcore`` group of an installed distribution
  (``[project.entry-points.detcore] foo = "detcore_foo.plugin"``): the entry
  point's name is the plugin's name;
* ``-p MODULE`` on the command line (``MODULE.py`` in the current directory
  or an installed module), or ``plugins = ["MODULE"]`` in a run file
  (``MODULE.py`` next to the run file, or an installed module), for a module
  that is not packaged (development); it must implement at least one hook;
* a ``[[hooks]]`` table in a run file, which builds a *runner hook* object
  (see :func:`detcore_runner_hooks`) and registers it for that run only.

There are two families of hooks.

**Registration hooks** (``detcore_backbones`` ... ``detcore_commands``) take no
arguments and return a dict ``{name: factory}``. detcore calls each plugin's
implementation separately, so every component knows the plugin and the
distribution (with version) that provided it; ``detcore plugins`` lists them.
A factory is a plain callable (a class or a function). Its signature *is* the
run-file interface: the keys of a ``{type = "name", ...}`` table are checked
against the factory's parameters (names, required ones, and simple type hints
``int``, ``float``, ``str``, ``bool``, ``list[...]``, ``Literal[...]``,
``X | None``) before anything heavy runs. A parameter annotated
``detcore.Sub["kind"]`` takes a nested component table of that kind, which is
checked too and handed to the factory as a :class:`detcore.Spec` to build
with ``spec(**extra_args)``. Keep the module that the entry point names light
(no top-level ``import torch``): import heavy code inside the factories.

Two plugins that register the same name for the same kind are reported when
a run file uses that name; ``plugin:name`` (e.g. ``type = "coco:coco"``)
always picks one.

**Runtime hooks** (``detcore_before_run`` ... ``detcore_load_checkpoint``) are
called by the runner while it trains and validates. Every implementation
registered on the plugin manager is called, in pluggy's order: ``tryfirst``
implementations first, then the others in reverse registration order, then
``trylast`` ones. Runner hooks listed in ``[[hooks]]`` tables are registered
in the order they are listed, so the last one listed runs first unless
``tryfirst``/``trylast`` says otherwise.

The ``runner`` argument of runtime hooks has these attributes, stable for
plugin authors:

``model``
    the detector (``torch.nn.Module``, unwrapped from DDP).
``optimizer``, ``lr_scheduler``
    the optimizer and the LR schedule (``lr_scheduler.get_last_lr()``).
``cfg``
    the resolved run file, read-only: one attribute per table and key, as
    docs/runfile.md lists them (``cfg.train.max_iters``,
    ``cfg.data.batch_size``, ``cfg.checkpoint.interval``); components'
    tables are dicts (``cfg.model["type"]``).
``work_dir``
    ``pathlib.Path`` of the run's work directory.
``epoch``, ``iter``
    the current epoch (0-based) and global iteration (number of optimizer
    steps done so far); ``max_epochs`` (or ``None``) and ``max_iters``.
    In the training iteration and train-epoch hooks ``epoch`` is the 0-based
    index of the epoch being trained. The runner increments it right after
    ``detcore_after_train_epoch``, so in epoch-based runs the validation at
    the end of an epoch (``detcore_val_model``, ``detcore_before_val_epoch``,
    ``detcore_after_val_iter``, ``detcore_after_val_epoch``) and the epoch's
    checkpoint hooks see ``epoch`` = the number of epochs completed (1 after
    the first epoch; the checkpoint is ``epoch_<epoch>.pth``), as does
    ``detcore_after_run`` after the last epoch. In iteration-based runs
    validation happens inside a pass over the loader: ``epoch`` is then the
    0-based index of that pass, and ``iter`` the steps completed.
``rank``, ``world_size``, ``is_main``
    the distributed position; only ``is_main`` should write files.
``device``
    the ``torch.device`` the model runs on.
``train_loader``, ``val_dataset``
    the training DataLoader and the validation dataset (or ``None``).
``class_names``
    list of class names, index = label.
``logger``
    a ``logging.Logger`` writing to the console and the run's log file.
``stop_training``
    set it to ``True`` to end training after the current iteration (the
    runner saves a checkpoint first).
``log_scalars(dict)``
    add scalars to the next line of ``scalars.jsonl``.
"""

from __future__ import annotations

from typing import Any

from detcore import hookspec

# --------------------------------------------------------------------------
# Registration hooks
# --------------------------------------------------------------------------


@hookspec
def detcore_backbones() -> dict[str, Any]:
    """Return the backbones this plugin provides, ``{name: factory}``.

    A backbone factory returns an ``nn.Module`` whose ``forward(x)`` takes a
    batch ``[N, 3, H, W]`` and returns an ``OrderedDict`` of feature maps, and
    which has an ``out_channels`` attribute: a list with the channel count of
    each returned map, in order (necks read it).

    ``@detcore.declare_out_channels(fn)`` on the factory declares those
    channels from the run-file arguments alone (``fn(args) -> list[int]``,
    no weights loaded), so ``detcore config check`` can reject a neck whose
    ``in_channels`` do not fit before anything is built.
    """


@hookspec
def detcore_necks() -> dict[str, Any]:
    """Return the necks this plugin provides, ``{name: factory}``.

    A neck factory is called by the detector with ``in_channels`` (the
    backbone's ``out_channels`` list) plus the run-file arguments. It returns
    an ``nn.Module`` mapping the backbone's ``OrderedDict`` of features to
    another ``OrderedDict`` and has an ``out_channels`` attribute (an int: all
    outputs share it).
    """


@hookspec
def detcore_heads() -> dict[str, Any]:
    """Return the detection heads this plugin provides, ``{name: factory}``.

    Heads are registered on their own so that a run file can swap one into an
    existing detector (``head = { type = "my_head" }``). The detector calls
    the factory with the arguments it owns (``in_channels``,
    ``num_classes``, ``num_anchors`` ... as documented for that detector) and
    the run-file arguments. The returned module need not be torchvision's:
    what each slot of the built-in detectors passes, and what its module
    must return (output keys, tensor layouts, anchor order, the box coder
    that decodes it, ``compute_loss(targets, head_outputs, anchors,
    matched_idxs)`` and its loss names), is specified in docs/models.md,
    section "Head slots".
    """


@hookspec
def detcore_detectors() -> dict[str, Any]:
    """Return the detectors this plugin provides, ``{name: factory}``.

    The ``[model]`` table of a run file names one. A detector is an
    ``nn.Module`` with this interface, which is all the runner relies on:

    * ``model(images, targets)`` in training mode, where ``images`` is a list
      of float tensors ``[3, H, W]`` in 0..1 and ``targets`` a list of dicts
      with ``boxes`` (float ``[K, 4]``, xyxy, pixels), ``labels`` (int64
      ``[K]``, 0-based contiguous class index) and, for instance
      segmentation, ``masks`` (uint8 ``[K, H, W]``), returns a dict of named
      scalar losses. The runner sums them and logs each.
    * ``model(images)`` in eval mode returns one dict per image with
      ``boxes`` (xyxy, in the coordinates of the image passed in),
      ``scores``, ``labels`` (0-based) and optionally ``masks``
      (float ``[K, 1, H, W]`` in 0..1).

    A plugin detector needs nothing from torchvision's internals to follow it.

    Optional attributes: a detector without them works, and gets what is
    said for "absent".

    ``class_layers``
        tuple of ``state_dict`` key prefixes of the layers whose shapes
        depend on ``num_classes`` (``("roi_heads.box_predictor",)``).
        Present: ``load_from`` (and the detector's own pretrained weights)
        may skip only these when their shapes differ; any other tensor that
        does not fit is an error naming the file. Absent: ``load_from``
        loads every tensor whose name and shape match and logs the others;
        only a file with no matching tensor at all is an error.
    ``weights_report``
        what the factory loaded as pretrained weights, an object whose
        ``summary()`` returns text saying from which file how many tensors
        were loaded and which were skipped (build a ``detcore.LoadReport``);
        the runner logs it when training starts. Absent or ``None``: nothing
        is logged.

    A factory that loads pretrained weights itself (a detector's, or a
    backbone's ``weights`` argument) must skip them while
    ``detcore.pretrained_skipped()`` is true: detcore builds inside
    ``detcore.skip_pretrained()`` whenever it loads a whole checkpoint right
    after (``--resume``, ``load_from``, ``detcore test``, ``predict``,
    ``export``), so the pretrained file need not be present. Ignoring it
    only costs the time to read that file.
    """


@hookspec
def detcore_datasets() -> dict[str, Any]:
    """Return the datasets this plugin provides, ``{name: factory}``.

    A dataset is a ``torch.utils.data.Dataset`` whose items are
    ``(image, target)``: ``image`` a ``tv_tensors.Image`` (uint8 or float,
    ``[3, H, W]``), ``target`` a dict with ``boxes``
    (``tv_tensors.BoundingBoxes``, XYXY), ``labels`` (int64, 0-based),
    ``image_id`` (int), ``orig_size`` (``(h, w)`` before transforms) and
    optionally ``masks`` (``tv_tensors.Mask``) and ``iscrowd``. It has
    ``class_names`` (list of str, index = label) and may have
    ``aspect_ratios`` (list of w/h, one per item, for aspect-ratio grouped
    batching). A parameter ``transforms: list[Sub["transform"]]`` receives
    the run file's transform list.
    """


@hookspec
def detcore_transforms() -> dict[str, Any]:
    """Return the data transforms this plugin provides, ``{name: factory}``.

    A transform is a callable ``(image, target) -> (image, target)`` on the
    structures described in :func:`detcore_datasets`; subclasses of
    ``torchvision.transforms.v2.Transform`` qualify as they are.
    """


@hookspec
def detcore_metrics() -> dict[str, Any]:
    """Return the evaluation metrics this plugin provides, ``{name: factory}``.

    Each ``[[metrics]]`` table builds one metric object. This is its whole
    contract (validation during training and ``detcore test`` use it the
    same way):

    ``evaluate(predictions, dataset) -> dict[str, float]`` (required)
        Called once per evaluation, in the main process only, after every
        process's predictions are gathered. ``predictions`` is a list with
        exactly one dict per item of ``dataset``, in dataset order
        (``predictions[i]`` belongs to ``dataset[i]``) whatever the number
        of processes. Each dict holds CPU tensors:

        * ``image_id``: an ``int``, the ``target["image_id"]`` of that item:
          the key to look the image up in the metric's own ground truth
          (an annotation file's image id, e.g. ``dataset.coco.imgs[id]``);
        * ``boxes``: float32 ``[K, 4]``, xyxy in *original image pixels*
          (the detector's boxes rescaled from the transformed image to
          ``target["orig_size"]``);
        * ``scores``: float32 ``[K]``; ``labels``: int64 ``[K]``, 0-based
          indices into ``dataset.class_names``;
        * ``masks`` (detectors that predict them): uint8 ``[K, 1, H, W]``,
          0/1, at the original image size.

        ``dataset`` is the dataset that was evaluated (the run file's
        ``[data.val]``, or the split ``detcore test`` evaluates). Take the
        ground truth in original pixels from the dataset's own records when
        it has them (``dataset.coco``), or from ``dataset[i]``: its
        ``target["boxes"]`` are in the transformed image's pixels
        (``target["boxes"].canvas_size``); scale them by
        ``target["orig_size"]`` over ``canvas_size`` (evaluation transforms
        should only resize). Return ``{name: float}``. The results of all
        ``[[metrics]]`` are merged into one dict that is logged, written to
        ``scalars.jsonl``, passed to :func:`detcore_after_val_epoch` and
        nameable by ``checkpoint.save_best``: prefix the names with
        something of the metric's own (``bbox_mAP``, ``voc_mAP``).
    Declaring the keys (optional, recommended)
        The metric factory's run-file check (``@detcore.check_with``)
        declares the names ``evaluate`` returns, from the table's
        arguments: ``ctx.declare(keys=["voc_mAP", "voc_mAP_11pt",
        "voc_AP/*"])`` (``*`` for names known only from the data, such as
        per-class APs). ``detcore config check`` then checks
        ``checkpoint.save_best`` and every runner-hook argument typed
        :data:`detcore.MetricName` (``early_stopping``'s ``metric``)
        against them, with a did-you-mean, before training. A run whose
        metrics do not all declare their keys is not checked.
    ``summary(results) -> str`` (optional)
        The table shown for this metric, given the dict this metric's
        ``evaluate`` returned: after each validation during training (on
        the console and in the log file, main process only) and by
        ``detcore test`` (the ``coco`` metric shows pycocotools' 12-line
        summary, ``voc`` its per-class AP table). Absent: a two-column table
        of names and values. If it raises, the run goes on and shows the
        error and that table instead.
    ``dump(predictions, dataset, path) -> list[str]`` (optional)
        Write ``predictions`` (as above) in the metric's results format to
        ``path`` (``detcore test --out PATH``; the ``coco`` metric writes
        COCO results JSON) and return one line per file written, naming it.
        The first ``[[metrics]]`` entry that has ``dump`` writes ``--out``;
        when none has, ``--out`` is detcore's JSON: one record per image
        with ``image_id``, ``boxes`` (xyxy, original pixels), ``scores`` and
        ``labels``.
    ``save_plots(out_dir) -> list[pathlib.Path]`` (optional)
        Draw figures of the last ``evaluate`` call into ``out_dir`` (a
        ``pathlib.Path``, created on demand) and return the files written.
        At the end of a training run the main process calls it with
        ``<work_dir>/plots`` (``detcore test --plots DIR`` with ``DIR``).
        The ``coco`` metric draws precision-recall curves per class and a
        confusion matrix with :func:`detcore.save_pr_curves`,
        :func:`detcore.confusion_matrix` and
        :func:`detcore.save_confusion_matrix`. Raise
        :class:`detcore.DetcoreError` for a missing optional dependency:
        the run logs it as a warning and ends normally.
    """


@hookspec
def detcore_runner_hooks() -> dict[str, Any]:
    """Return the runner hooks this plugin provides, ``{name: factory}``.

    A ``[[hooks]]`` table builds one; the object is registered on the plugin
    manager for the duration of the run, so its ``@detcore.hookimpl``
    methods named like the runtime hooks below are called by the runner.
    """


@hookspec
def detcore_commands() -> dict[str, Any]:
    """Return the CLI subcommands this plugin adds, ``{name: detcore.Command}``.

    ``detcore.Command(help, configure, run)``: ``configure(parser)`` adds
    arguments to an ``argparse.ArgumentParser`` (it may add sub-parsers of its
    own), ``run(args) -> int`` executes and returns the exit status. Raise
    ``detcore.DetcoreError`` for a user error: it is printed without a
    traceback.
    """


# --------------------------------------------------------------------------
# Runtime hooks
# --------------------------------------------------------------------------


@hookspec
def detcore_before_run(runner) -> None:
    """Called once after the model, data, optimizer and any resumed state are
    ready and before the first training iteration."""


@hookspec
def detcore_after_run(runner) -> None:
    """Called once when training ends, normally or because ``stop_training``
    was set. Not called when the run fails with an exception."""


@hookspec
def detcore_before_train_epoch(runner, epoch: int) -> None:
    """Called at the start of each training epoch (0-based ``epoch``). In
    iteration-based runs an "epoch" is one pass over the data loader."""


@hookspec
def detcore_after_train_epoch(runner, epoch: int) -> None:
    """Called at the end of each training epoch, before validation and the
    epoch's checkpoint."""


@hookspec
def detcore_before_train_iter(runner, iteration: int, batch) -> None:
    """Called before the forward pass of each iteration. ``iteration`` is the
    0-based global index of the step about to run; ``batch`` is
    ``(images, targets)`` already on the device."""


@hookspec
def detcore_after_train_iter(runner, iteration: int, losses: dict) -> None:
    """Called after the optimizer step (when gradients are accumulated:
    after each micro-batch; ``runner.iter`` counts optimizer steps).
    ``losses`` maps each loss name and ``"loss"`` (the total) to a detached
    0-d tensor. Converting them to floats forces a device sync: do it only
    when needed."""


@hookspec(firstresult=True)
def detcore_val_model(runner):
    """Return the module to validate with instead of ``runner.model`` (for
    example an exponential moving average of it), or ``None``.

    First non-``None`` result wins (``firstresult``). The runner also saves
    the returned module's ``state_dict()`` in every checkpoint as
    ``checkpoint["eval_model"]``; ``detcore test``, ``predict``, ``export`` and
    ``load_from`` use those weights in place of ``checkpoint["model"]``, while
    ``--resume`` restores ``model`` (and the hook restores its own state)."""


@hookspec
def detcore_before_val_epoch(runner) -> None:
    """Called before validation starts (on every rank)."""


@hookspec
def detcore_after_val_iter(runner, batch, outputs: list) -> None:
    """Called after each validation batch with its ``(images, targets)`` and
    the model's per-image outputs (boxes in the coordinates of the images
    passed to the model)."""


@hookspec
def detcore_after_val_epoch(runner, metrics: dict) -> None:
    """Called after validation with the computed metrics (``{name: float}``;
    identical on every rank). Set ``runner.stop_training`` here to stop early.
    """


@hookspec
def detcore_save_checkpoint(runner, checkpoint: dict) -> None:
    """Called before a checkpoint is written. Add this plugin's state under a
    key of its own (``checkpoint["hooks"]["my_hook"] = {...}``). Values must be
    tensors, numbers, strings, lists, tuples and dicts only, so that the file
    loads with ``torch.load(weights_only=True)``."""


@hookspec
def detcore_load_checkpoint(runner, checkpoint: dict) -> None:
    """Called when a run resumes from ``checkpoint`` (the dict that
    :func:`detcore_save_checkpoint` filled), after the model and optimizer
    are restored and before :func:`detcore_before_run`. Restore this
    plugin's state from it."""
