"""Sphinx configuration of the course's web pages (built by ``python -m utils.site``).

The pages are the solved notebooks after one run: myst-nb renders them as they are, never
executes them. Nothing is fetched from the internet when the site is built or viewed.
"""

project = "Mechanistic interpretability, hands on"
author = "the course's authors"
extensions = ["myst_nb"]
exclude_patterns = ["**.ipynb_checkpoints"]

nb_execution_mode = "off"  # utils.site hands over notebooks already run, once
nb_output_stderr = "remove"  # progress bars and log lines: noise on a static page
nb_ipywidgets_js = {}  # the widget scripts would come from a CDN; widgets show as text

html_theme = "sphinx_book_theme"
html_title = project
html_favicon = "favicon.svg"  # without one the browser asks for /favicon.ico, which is not there
html_context = {"default_mode": "light"}  # the theme logs an error when no mode is set
html_theme_options = {
    "show_toc_level": 2,  # the sections of a chapter, in the page's own table of contents
    "use_download_button": False,  # offers the page's source, which is not copied
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
}
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
