"""Worker pools are sized by the CPUs a container may use, not by the host's count."""
import os

from pipeline.cpus import usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def test_a_cgroup_v2_quota_caps_the_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # docker --cpus=1
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a part-used CPU still gets a worker
    assert usable_cpus(tmp_path) == min(2, AFFINITY)
    (tmp_path / "cpu.max").write_text(f"{AFFINITY * 400000} 100000\n")  # a quota above the affinity mask
    assert usable_cpus(tmp_path) == AFFINITY


def test_a_cgroup_v1_quota_caps_the_cpus(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert usable_cpus(tmp_path) == AFFINITY


def test_no_quota_or_no_cgroup_means_the_affinity_mask(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == AFFINITY
    assert usable_cpus(tmp_path / "missing") == AFFINITY
