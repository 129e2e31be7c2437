"""The chi-squared goodness-of-fit test the exactness tests share (see `specdec.testing`)."""

from specdec.testing import chi2_pvalue  # noqa: F401
