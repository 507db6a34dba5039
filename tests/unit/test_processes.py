"""Which UIDs the process table shows busy, read as usermod reads it: the Uid line of each
/proc/<pid>/status (real, effective, saved), zombies left out."""

from runas_agent.host.processes import running_uids


def status(uids, state="S (sleeping)"):
    return f"Name:\tx\nUmask:\t0022\nState:\t{state}\nTgid:\t1\nPid:\t1\nUid:\t{uids[0]}\t{uids[1]}\t{uids[2]}\t{uids[1]}\n"


def test_real_effective_and_saved_uids_count_and_zombies_do_not(tmp_path):
    for pid, text in {"10": status((5000, 5000, 5000)), "11": status((0, 7000, 0)), "12": status((0, 0, 8000)),
                      "13": status((9000, 9000, 9000), "Z (zombie)"), "self": status((1, 1, 1))}.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "status").write_text(text)
    (tmp_path / "14").mkdir()                       # gone while being read: no status file
    assert running_uids(str(tmp_path)) == {0, 5000, 7000, 8000}
