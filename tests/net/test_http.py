import email.utils
import time

import pytest

from proxy.net.http import retry_after_seconds


@pytest.mark.parametrize(("value", "seconds"), [("5", 5.0), (" 0.5 ", 0.5), ("-3", 0.0), (None, None), ("", None),
                                                ("soon", None), ("Mon, 99 Foo 2020 00:00:00 GMT", None)])
def test_retry_after_in_seconds(value, seconds):
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date():
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(later) <= 30
    assert retry_after_seconds(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
