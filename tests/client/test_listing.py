"""Job tables in words (`remotecell jobs`, `%remote_jobs` without widgets): GPUs and cost."""

from __future__ import annotations

from remotecell._proto import pb
from remotecell.client.listing import format_jobs


def row(table: str, job_id: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(job_id))
    return line.split()


def test_a_job_table_says_what_each_job_ran_on_and_cost() -> None:
    jobs = [
        # Two H100s for 100 s at the control plane's price for the whole job.
        pb.JobInfo(
            job_id="job-h100",
            state=pb.SUCCEEDED,
            started=1000.0,
            finished=1100.0,
            gpu_type="H100",
            gpu_count=2,
            price_per_second=0.002,
            summary="train()",
        ),
        # No price from the control plane: the default price of a T4, for 10 s.
        pb.JobInfo(
            job_id="job-t4",
            state=pb.SUCCEEDED,
            started=1.0,
            finished=11.0,
            gpu_type="T4",
            gpu_count=1,
        ),
        # A type nobody priced.
        pb.JobInfo(
            job_id="job-v100",
            state=pb.FAILED,
            started=1.0,
            finished=2.0,
            gpu_type="V100",
            gpu_count=1,
        ),
        pb.JobInfo(
            job_id="job-cpu", state=pb.SUCCEEDED, started=1.0, finished=2.0, price_per_second=0
        ),
        pb.JobInfo(
            job_id="job-queued", state=pb.QUEUED, gpu_type="L4", gpu_count=1, summary="x = 1"
        ),
    ]
    table = format_jobs(jobs)
    assert table.splitlines()[0].split() == [
        "JOB", "STATE", "STARTED", "DURATION", "GPU", "COST", "CODE",
    ]  # fmt: skip
    assert row(table, "job-h100")[4:] == ["100.0s", "H100:2", "$0.2000", "train()"]
    assert row(table, "job-t4")[4:6] == ["10.0s", "T4"]
    assert row(table, "job-t4")[6] == f"${0.000164 * 10:.4f}"
    assert row(table, "job-v100")[6] == "?"
    assert row(table, "job-cpu")[5:7] == ["-", "-"]
    assert row(table, "job-queued")[1:] == ["queued", "-", "-", "L4", "-", "x", "=", "1"]
