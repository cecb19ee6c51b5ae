"""The gate's paired statistics against published and independently computed references."""
import math

import pytest

from tfx_quantization.quantization import stats

pytestmark = pytest.mark.fast


def test_paired_interval_matches_the_published_reference():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8:
    # complete response before/after consolidation therapy (Cavo et al., 2012), table
    # [[59, 6], [16, 80]]; the Newcombe square-and-add interval printed by the book's R
    # package (contingencytables, tests/testthat/test-ch8.R): -0.0621 (95% CI -0.1186 to -0.0046).
    r = stats.paired_drop([59, 6, 16, 80], confidence=0.95)
    assert round(r.drop, 4) == -0.0621
    assert (round(r.low, 4), round(r.high, 4)) == (-0.1186, -0.0046)
    assert (r.n, r.lost, r.gained) == (161, 6, 16)


def test_mcnemar_p_value_is_the_exact_binomial_tail():
    r = stats.paired_drop([59, 6, 16, 80])
    tail = sum(math.comb(22, k) for k in range(0, 7)) / 2 ** 22  # P(X <= 6), X ~ Bin(22, 1/2)
    assert r.mcnemar_p == pytest.approx(2 * tail, rel=1e-12)
    assert stats.paired_drop([50, 0, 0, 50]).mcnemar_p == 1.0


def test_wilson_interval_matches_the_closed_form():
    k, n, confidence = 7, 40, 0.9
    z = 1.6448536269514722  # the 95th percentile of the standard normal
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = stats.wilson_interval(k, n, confidence)
    assert (low, high) == (pytest.approx(centre - half, abs=1e-12), pytest.approx(centre + half, abs=1e-12))


def test_no_discordant_example_still_leaves_an_interval_on_a_small_split():
    small, large = stats.paired_drop([50, 0, 0, 5]), stats.paired_drop([5000, 0, 0, 500])
    assert small.drop == large.drop == 0
    assert small.high > 0.01 > large.high > 0  # 55 examples cannot show a drop within 1 pp


def test_examples_to_resolve_is_the_smallest_split_that_can_pass():
    need = stats.examples_to_resolve(0.01, 0.99, 0.9)
    at = lambda n: stats.paired_drop([round(0.99 * n), 0, 0, n - round(0.99 * n)], 0.9).high  # noqa: E731
    assert at(need) <= 0.01 < at(need - 1)
    with pytest.raises(ValueError, match="at least one example"):
        stats.paired_drop([0, 0, 0, 0])
