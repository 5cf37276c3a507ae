# cmake -DSOURCE_DIR=<shmring source> -DBUILD_DIR=<a built shmring> -DWORK_DIR=<scratch>
#       [-DCONFIG=Release] [-DGENERATOR=...] [-DCXX_COMPILER=...] [-DVERSION=x.y.z]
#       [-DTOOLCHAIN_FILE=... [-DEMULATOR=program|arg|...]] -P run.cmake
#
# Installs shmring from BUILD_DIR into a scratch prefix, then builds and runs
# the consumer project in tests/package three ways: find_package() against the
# install prefix, find_package() against the build tree, and add_subdirectory()
# of the source tree. With VERSION, each consumer also checks that the package
# and its headers carry exactly that version.
cmake_minimum_required(VERSION 3.25)

foreach(var SOURCE_DIR BUILD_DIR WORK_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

set(config_args)
set(build_config)
if(CONFIG)
  set(config_args -DCMAKE_BUILD_TYPE=${CONFIG})
  set(build_config --config ${CONFIG})
endif()
if(GENERATOR)
  list(APPEND config_args -G ${GENERATOR})
endif()
if(CXX_COMPILER)
  list(APPEND config_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(VERSION)
  list(APPEND config_args -DSHMRING_EXPECTED_VERSION=${VERSION})
endif()
# A cross build: the consumers are built for the same target and run under
# its emulator (given with '|' between its words).
# BOTH: the scratch prefix and the build tree lie outside the target's root,
# where a cross toolchain file confines find_package().
if(TOOLCHAIN_FILE)
  list(APPEND config_args -DCMAKE_TOOLCHAIN_FILE=${TOOLCHAIN_FILE} -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=BOTH)
endif()
string(REPLACE "|" ";" emulator "${EMULATOR}")

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "test_package: ${what} failed (${rc}):\n${ARGN}\n${out}")
  endif()
  message(STATUS "test_package: ${what}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# consumer(NAME cmake-args...): configure, build and run tests/package.
function(consumer name)
  set(dir ${WORK_DIR}/${name})
  step("${name}: configure" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package -B ${dir}
       ${config_args} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF ${ARGN})
  set(configure_output "${step_output}" PARENT_SCOPE)
  step("${name}: build" ${CMAKE_COMMAND} --build ${dir} ${build_config} --parallel 2)
  file(GLOB_RECURSE exe LIST_DIRECTORIES false ${dir}/package_test ${dir}/*/package_test)
  if(NOT exe)
    message(FATAL_ERROR "test_package: ${name}: no package_test executable under ${dir}")
  endif()
  list(GET exe 0 exe)
  step("${name}: run" ${emulator} ${exe})
endfunction()

step("install into ${prefix}" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} ${build_config})

consumer(find_package_install -DCMAKE_PREFIX_PATH=${prefix})
string(FIND "${configure_output}" "shmring found in ${prefix}/" at)
if(at EQUAL -1)
  message(FATAL_ERROR "test_package: find_package did not use the install prefix ${prefix}:\n${configure_output}")
endif()

consumer(find_package_build_tree -Dshmring_DIR=${BUILD_DIR})
consumer(add_subdirectory -DSHMRING_SOURCE_DIR=${SOURCE_DIR})
