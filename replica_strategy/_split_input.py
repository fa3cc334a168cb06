"""Distributed datasets that split each batch by the fractions in force, re-read every step.

With a split other than "even", TensorFlow's input pipeline still cuts each batch evenly (its
rebatching is fixed when the dataset is distributed), but every part stays on the host (the
strategy's input workers deliver every part there). The iterator then puts the parts back
together, in their original row order, and cuts the batch again by sizes computed in the graph
from `SplitState.fractions`, a host variable: changing the split ("auto") changes the sizes
without retracing, and the batch dimension the step sees is dynamic. Part i then goes to replica device i.

The classes below are TensorFlow's `DistributedDataset`, `DistributedDatasetsFromFunction`
and `DistributedIterator` with that one difference, plus their `TypeSpec`s, so that a dataset
or iterator passed into a `tf.function` (as Keras passes its iterator) comes back out as the
re-splitting kind.
"""

from __future__ import annotations

from tensorflow.python.data.ops import optional_ops
from tensorflow.python.distribute import input_lib, values
from tensorflow.python.framework import ops, sparse_tensor
from tensorflow.python.framework import tensor as tensor_lib
from tensorflow.python.ops import array_ops, cond, math_ops, sparse_ops
from tensorflow.python.ops.ragged import ragged_tensor
from tensorflow.python.util import nest

from replica_strategy import batching


def resplit(element, fractions, devices):
    """`element` (a structure of `PerReplica`s, parts on the host) cut again by `fractions`.

    The parts are concatenated (TensorFlow's rebatching keeps rows in order, so this is the
    global batch), cut by `batching.weighted_split_sizes_tensor`, and part i is placed on
    `devices[i]`. Leaves that are not per-replica batches (scalars) pass unchanged.
    """
    leaves = nest.flatten(element)
    batched = [
        index
        for index, leaf in enumerate(leaves)
        if isinstance(leaf, values.PerReplica)
        and len(leaf.values) == len(devices)
        and _rank(leaf.values[0]) not in (None, 0)
    ]
    if not batched:
        return element
    wholes = {index: _concat(leaves[index].values) for index in batched}
    sizes = batching.weighted_split_sizes_tensor(_rows(wholes[batched[0]]), fractions)
    ends = math_ops.cumsum(sizes)
    starts = ends - sizes
    for index in batched:
        pieces = _cut(wholes[index], sizes, starts, len(devices))
        placed = []
        for device, piece in zip(devices, pieces, strict=True):
            with ops.device(device):
                placed.append(nest.map_structure(array_ops.identity, piece, expand_composites=True))
        leaves[index] = values.PerReplica(tuple(placed))
    return nest.pack_sequence_as(element, leaves)


def dynamic_batch_spec(element_spec):
    """`element_spec` with the batch dimension of each per-replica part unknown."""
    return nest.map_structure(
        lambda spec: (
            input_lib._rebatch_as_dynamic(spec)  # pylint: disable=protected-access
            if isinstance(spec, values.PerReplicaSpec)
            else spec
        ),
        element_spec,
    )


def _rank(value):
    if isinstance(value, sparse_tensor.SparseTensor):
        return value.shape.rank
    if isinstance(value, (tensor_lib.Tensor, ragged_tensor.RaggedTensor)):
        return value.shape.rank
    return None


def _concat(parts):
    if isinstance(parts[0], sparse_tensor.SparseTensor):
        return sparse_ops.sparse_concat_v2(axis=0, sp_inputs=list(parts))
    return array_ops.concat(list(parts), axis=0)


def _rows(whole):
    if isinstance(whole, sparse_tensor.SparseTensor):
        return whole.dense_shape[0]
    if isinstance(whole, ragged_tensor.RaggedTensor):
        return whole.nrows(out_type="int64")
    return array_ops.shape(whole, out_type="int64")[0]


def _cut(whole, sizes, starts, num_replicas):
    if isinstance(whole, tensor_lib.Tensor):
        return array_ops.split(whole, sizes, num=num_replicas, axis=0)
    if isinstance(whole, sparse_tensor.SparseTensor):
        rest = whole.dense_shape[1:]
        return [
            sparse_ops.sparse_slice(
                whole,
                array_ops.concat([starts[i : i + 1], array_ops.zeros_like(rest)], 0),
                array_ops.concat([sizes[i : i + 1], rest], 0),
            )
            for i in range(num_replicas)
        ]
    return [whole[starts[i] : starts[i] + sizes[i]] for i in range(num_replicas)]


# -- iterators -------------------------------------------------------------------------------


class ResplitIterator(input_lib.DistributedIterator):
    """A `DistributedIterator` whose batches are split by the strategy's fractions in force."""

    def _resplit(self, element):
        split_state = self._strategy.extended._split  # pylint: disable=protected-access
        devices = split_state.devices
        if self._options is not None and not self._options.experimental_fetch_to_device:
            devices = (split_state.host,) * len(devices)
        return resplit(element, split_state.fractions, devices)

    def get_next(self, name=None):
        return self._resplit(super().get_next(name))

    def get_next_as_optional(self):
        optional = super().get_next_as_optional()
        element_spec = self.element_spec
        return cond.cond(
            optional.has_value(),
            lambda: optional_ops.Optional.from_value(self._resplit(optional.get_value())),
            lambda: optional_ops.Optional.empty(element_spec),
            strict=True,
        )

    @property
    def element_spec(self):
        return dynamic_batch_spec(super().element_spec)

    @property
    def _type_spec(self):
        return ResplitIteratorSpec(
            self._input_workers,
            self._element_spec,
            self._strategy,
            self._options,
            self._cardinality,
            self._enable_get_next_as_optional,
            self._replica_order,
        )


class ResplitIteratorSpec(input_lib.DistributedIteratorSpec):
    """The `TypeSpec` of a `ResplitIterator`."""

    @property
    def value_type(self):
        return ResplitIterator

    def _from_components(self, components):
        return ResplitIterator(
            input_workers=self._input_workers,
            iterators=None,
            components=components,
            element_spec=self._element_spec,
            strategy=self._strategy,
            cardinality=self._cardinality,
            enable_get_next_as_optional=self._enable_get_next_as_optional,
            options=self._options,
            replica_order=self._replica_order,
        )

    @staticmethod
    def from_value(value):
        return value._type_spec  # pylint: disable=protected-access


def _resplit_iterator(iterator):
    """`iterator`, a `DistributedIterator` TensorFlow just made, as a `ResplitIterator`."""
    # pylint: disable=protected-access
    resplitting = ResplitIterator(
        iterator._input_workers,
        iterator._iterators,
        iterator._strategy,
        cardinality=iterator._cardinality,
        enable_get_next_as_optional=iterator._enable_get_next_as_optional,
        options=iterator._options,
        replica_order=iterator._replica_order,
    )
    resplitting._element_spec = iterator._element_spec
    return resplitting


# -- datasets --------------------------------------------------------------------------------


class ResplitDataset(input_lib.DistributedDataset):
    """`strategy.experimental_distribute_dataset` under a split other than "even"."""

    def __iter__(self):
        return _resplit_iterator(super().__iter__())

    @property
    def element_spec(self):
        return dynamic_batch_spec(super().element_spec)

    @property
    def _type_spec(self):
        return ResplitDatasetSpec(
            self._input_workers,
            self._element_spec,
            self._strategy,
            self._options,
            enable_get_next_as_optional=self._enable_get_next_as_optional,
        )


class ResplitDatasetSpec(input_lib.DistributedDatasetSpec):
    """The `TypeSpec` of a `ResplitDataset`."""

    @property
    def value_type(self):
        return ResplitDataset

    def _from_components(self, components):
        return ResplitDataset(
            input_workers=self._input_workers,
            strategy=self._strategy,
            components=components,
            element_spec=self._element_spec,
            enable_get_next_as_optional=self._enable_get_next_as_optional,
            options=self._options,
            replica_order=self._replica_order,
        )

    @staticmethod
    def from_value(value):
        return value._type_spec  # pylint: disable=protected-access


class ResplitDatasetsFromFunction(input_lib.DistributedDatasetsFromFunction):
    """`strategy.distribute_datasets_from_function` under a split other than "even".

    Each replica's dataset gives its own batches; the step's batches are concatenated in
    replica order and cut by the fractions in force.
    """

    def __iter__(self):
        return _resplit_iterator(super().__iter__())

    @property
    def element_spec(self):
        return dynamic_batch_spec(super().element_spec)

    @property
    def _type_spec(self):
        return ResplitDatasetsFromFunctionSpec(
            self._input_workers, self._element_spec, self._strategy, self._options
        )


class ResplitDatasetsFromFunctionSpec(input_lib.DistributedDatasetsFromFunctionSpec):
    """The `TypeSpec` of a `ResplitDatasetsFromFunction`."""

    @property
    def value_type(self):
        return ResplitDatasetsFromFunction

    def _from_components(self, components):
        return ResplitDatasetsFromFunction(
            input_workers=self._input_workers,
            strategy=self._strategy,
            components=components,
            element_spec=self._element_spec,
            options=self._options,
        )

    @staticmethod
    def from_value(value):
        return value._type_spec  # pylint: disable=protected-access


def distribute_dataset(dataset, input_workers, strategy, options):
    """`ResplitDataset` of `dataset`, as `input_util.get_distributed_dataset` would make it."""
    return ResplitDataset(
        input_workers,
        strategy,
        dataset,
        num_replicas_in_sync=strategy.num_replicas_in_sync,
        options=options,
    )


def distribute_datasets_from_function(dataset_fn, input_workers, input_contexts, strategy, options):
    """`ResplitDatasetsFromFunction`, as `input_util.get_distributed_datasets_from_function`."""
    return ResplitDatasetsFromFunction(
        input_workers,
        strategy,
        input_contexts=input_contexts,
        dataset_fn=dataset_fn,
        options=options,
    )
