"""Tests of the pages in a real browser (Chromium driven by Playwright), and the helpers they share."""
