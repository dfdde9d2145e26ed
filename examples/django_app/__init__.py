"""A minimal Django project whose tasks OmniQ runs (``omniq.contrib.django``).

Run it from the repository's root, in two shells::

    export DJANGO_SETTINGS_MODULE=examples.django_app.settings
    omniq worker omniq.contrib.django:worker_app
    python -m django runserver        # then open /add?a=2&b=3 and the /result/<id> it links to

tests/contrib/test_django.py runs it end to end.
"""
