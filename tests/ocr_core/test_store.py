"""Image bytes live while someone holds them: the reading job, then each delivery; failures keep them a bounded while."""

from __future__ import annotations

from ocr_core import store

JOB = "job-1"
DATA = b"\x89PNG image bytes"


def holders(conn) -> set[str]:
    return {h.decode() for h in conn.smembers(store.holders_key(JOB))}


def test_saved_bytes_are_held_by_the_reading_until_it_lets_go(conn):
    store.save_image(conn, JOB, DATA, ttl=600)
    assert holders(conn) == {store.READER}
    assert 0 < conn.ttl(store.holders_key(JOB)) <= 600
    store.release_image(conn, JOB, store.READER)
    assert store.load_image(conn, JOB) is None
    assert not conn.exists(store.holders_key(JOB))


def test_the_last_holder_out_deletes_the_bytes_whatever_the_order(conn):
    store.save_image(conn, JOB, DATA, ttl=600)
    store.hold_image(conn, JOB, [store.delivery_holder("notion"), store.delivery_holder("local")], ttl=600)
    store.release_image(conn, JOB, store.READER)
    store.release_image(conn, JOB, store.delivery_holder("local"))
    # A delivery run twice (a retry after a lost acknowledgement) must not count as another holder leaving.
    store.release_image(conn, JOB, store.delivery_holder("local"))
    assert store.load_image(conn, JOB) == DATA
    store.release_image(conn, JOB, store.delivery_holder("notion"))
    assert store.load_image(conn, JOB) is None


def test_a_stranger_releasing_changes_nothing(conn):
    store.save_image(conn, JOB, DATA, ttl=600)
    store.release_image(conn, JOB, store.delivery_holder("never-held"))
    store.release_image(conn, JOB, store.delivery_holder("never-held"), keep_for=5)
    assert store.load_image(conn, JOB) == DATA
    assert conn.ttl(store.blob_key(JOB)) > 500
    assert not conn.exists(store.kept_key(JOB))


def test_a_holder_that_failed_for_good_keeps_the_bytes_for_a_bounded_while(conn):
    store.save_image(conn, JOB, DATA, ttl=600)
    store.hold_image(conn, JOB, [store.delivery_holder("notion"), store.delivery_holder("local")], ttl=600)
    store.release_image(conn, JOB, store.READER)
    store.release_image(conn, JOB, store.delivery_holder("notion"), keep_for=60)
    assert store.load_image(conn, JOB) == DATA
    assert conn.ttl(store.blob_key(JOB)) > 500  # another delivery still needs them: untouched
    store.release_image(conn, JOB, store.delivery_holder("local"))
    assert store.load_image(conn, JOB) == DATA
    assert 0 < conn.ttl(store.blob_key(JOB)) <= 60


def test_keeping_after_a_failure_never_outlives_the_saved_ttl(conn):
    store.save_image(conn, JOB, DATA, ttl=30)
    store.release_image(conn, JOB, store.READER, keep_for=3600)
    assert 0 < conn.ttl(store.blob_key(JOB)) <= 30


def test_a_failure_with_nothing_to_keep_deletes_like_a_success(conn):
    store.save_image(conn, JOB, DATA, ttl=600)
    store.release_image(conn, JOB, store.READER, keep_for=0)
    assert store.load_image(conn, JOB) is None
