"""Trajectory readers: TensorBoard events (simple_value and tf.summary-style tensors, purge on
resume), JSONL, and read_trajectory's source order."""

import json

import numpy as np
import pytest
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2, summary_pb2, tensor_pb2
from tensorboardX.record_writer import RecordWriter

from normgrowth_jax.analysis import trajectory as at


def test_tensorboard_round_trip_with_purge(tmp_path):
  d = str(tmp_path)
  w = SummaryWriter(d, filename_suffix=".run1")  # distinct files even within one second
  for s in (10, 20, 30):
    w.add_scalar("norms/param_norm", 100.0 + s, global_step=s)
    w.add_scalar("norms/alignment", 0.01 * s, global_step=s)
    w.add_scalar("loss", 5.0, global_step=s)
  w.close()
  # Resume from a checkpoint at step 20: events after it are purged, then rewritten.
  w = SummaryWriter(d, purge_step=21, filename_suffix=".run2")
  w.add_scalar("norms/param_norm", 999.0, global_step=30)
  w.close()
  tb = at.read_tensorboard(d)
  assert tb["step"].tolist() == [10, 20, 30]
  np.testing.assert_allclose(tb["param_norm"], [110.0, 120.0, 999.0])
  assert np.isnan(tb["alignment"][2]) and tb["alignment"][1] == pytest.approx(0.2)
  assert "loss" not in tb
  # The purge applies to every tag, as in TensorBoard: loss at step 30 is gone too.
  np.testing.assert_array_equal(at.read_tensorboard(d, prefix="")["loss"], [5.0, 5.0, np.nan])


def test_tensorboard_tensor_scalars_as_written_by_tf_summary(tmp_path):
  """clu/tf.summary (T5X) store scalars as TensorProto: float_val or tensor_content."""
  train = tmp_path / "train"
  train.mkdir()
  rw = RecordWriter(str(train / "events.out.tfevents.1.host"))
  values = {1000: 12.5, 2000: 13.25}
  for step, v in values.items():
    t1 = tensor_pb2.TensorProto(dtype=1, float_val=[v])  # DT_FLOAT
    t2 = tensor_pb2.TensorProto(dtype=2, tensor_content=np.float64(v / 10).tobytes())
    summ = summary_pb2.Summary(
        value=[
            summary_pb2.Summary.Value(tag="norms/param_norm", tensor=t1),
            summary_pb2.Summary.Value(tag="norms/learning_rate", tensor=t2),
        ]
    )
    rw.write(event_pb2.Event(step=step, wall_time=1.0, summary=summ).SerializeToString())
  rw.close()
  tb = at.read_tensorboard(str(tmp_path))  # MODEL_DIR: its train/ subdirectory is used
  assert tb["step"].tolist() == [1000, 2000]
  np.testing.assert_array_equal(tb["param_norm"], [12.5, 13.25])
  np.testing.assert_allclose(tb["learning_rate"], [1.25, 1.325])


def test_jsonl_and_source_order(tmp_path):
  rows = [
      {"step": 1, "param_norm": 1.5, "nonfinite": False},
      {"step": 2, "param_norm": None, "nonfinite": True},
  ]
  path = tmp_path / "norms.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 3, "par')
  tr = at.read_jsonl_trajectory(str(path))
  assert tr["step"].tolist() == [1, 2] and tr["nonfinite"].tolist() == [False, True]
  assert tr["param_norm"][0] == 1.5 and np.isnan(tr["param_norm"][1])
  # No checkpoint, no events: read_trajectory falls through to the JSONL file.
  assert at.read_trajectory(str(tmp_path))["step"].tolist() == [1, 2]
  with pytest.raises(FileNotFoundError, match="No trajectory"):
    at.read_trajectory(str(tmp_path / "empty"))
