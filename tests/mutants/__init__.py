"""Deliberately broken reference meshes, loaded as pytest plugins (`-p tests.mutants.<name>`), to prove the
conformance suites go red in exactly the cells the break affects."""
