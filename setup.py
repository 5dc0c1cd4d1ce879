"""Only the optional C extension; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dnsfailover.server._mmsg",
            ["dnsfailover/server/_mmsg.c", "dnsfailover/server/_hits.c"],
            extra_compile_args=["-O2", "-std=gnu11"],
            optional=True,  # Linux only: without it the UDP thread uses recvfrom/sendto
        )
    ]
)
