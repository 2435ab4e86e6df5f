# `baton run --listen-fds` (tools/run-supervisor.c): a supervisor that
# holds the listeners and passes them the systemd way, for Go servers and
# static binaries. Included from tests/CMakeLists.txt.

# The static C test server: -static and no sanitizer (a sanitizer runtime
# cannot be linked statically), whatever this build's flags.
add_executable(run-listen-fds-server run-listen-fds-server.c)
foreach(prop COMPILE_OPTIONS LINK_OPTIONS)
  get_target_property(_opts run-listen-fds-server ${prop})
  if(_opts)
    list(FILTER _opts EXCLUDE REGEX "^-fsanitize")
    set_target_properties(run-listen-fds-server PROPERTIES ${prop} "${_opts}")
  endif()
endforeach()
target_link_options(run-listen-fds-server PRIVATE -static)
set_target_properties(run-listen-fds-server PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                       ${CMAKE_CURRENT_BINARY_DIR})

# static: the C server restarted 6 times under load (same command, SIGHUP,
# baton upgrade); go: the same with a Go server built from Debian's
# golang-go and go-systemd by run-listen-fds-go-build (a fixture with a
# timeout of its own, which installs the packages with
# run-listen-fds-deps.sh when missing; the go case skips only if that
# cannot be done); dies, never-ready: a new copy whose program exits before
# READY=1, or never says it, exits 1 and the old copy serves on.
foreach(case go-build static go dies never-ready)
  add_test(NAME run-listen-fds-${case}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/run-listen-fds.sh ${CMAKE_BINARY_DIR} ${case})
  set_tests_properties(run-listen-fds-${case} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                       LABELS "baton;run" RUN_SERIAL TRUE)
endforeach()
set_tests_properties(run-listen-fds-go-build PROPERTIES FIXTURES_SETUP listen-fds-go)
set_tests_properties(run-listen-fds-go PROPERTIES FIXTURES_REQUIRED listen-fds-go)
