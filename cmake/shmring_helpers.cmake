# Warnings and sanitizers for shmring's own targets only (PRIVATE): a parent
# project that consumes the library never inherits them.
function(shmring_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>)
  # GCC 12 reports -Wrestrict falsely inside std::string concatenation at -O2
  # and above (GCC bug 105329).
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-restrict>)
  endif()
  if(SHMRING_SANITIZER STREQUAL "address")
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  elseif(SHMRING_SANITIZER STREQUAL "thread")
    target_compile_options(${target} PRIVATE -fsanitize=thread -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=thread)
  endif()
endfunction()

# shmring_skip_part(<option> <part> <missing...>): turns <option> off for this
# configure (a normal variable over the cached option, so the part returns
# once its dependencies are installed) and records why for the summary.
function(shmring_skip_part option part)
  list(JOIN ARGN ", " missing)
  set(${option} OFF PARENT_SCOPE)
  set(_shmring_why_${option} "skipped, not found: ${missing}" PARENT_SCOPE)
endfunction()

# shmring_summary(): what this configure builds, and for each part left out,
# why and what to install.
function(shmring_summary)
  set(lines "shmring ${PROJECT_VERSION}, ${CMAKE_BUILD_TYPE}${CMAKE_CONFIGURATION_TYPES}:")
  list(APPEND lines "  library   shmring::shmring")
  if(SHMRING_HAVE_CUDA)
    list(JOIN CMAKE_CUDA_ARCHITECTURES "," archs)  # a ';' would split the line
    list(APPEND lines "  cuda      shmring::cuda (architectures ${archs}, runtime ${SHMRING_CUDA_RUNTIME})")
  else()
    list(APPEND lines "  cuda      off: ${_shmring_cuda_why}")
  endif()
  if(SHMRING_HAVE_BRIDGE)
    list(APPEND lines "  bridge    shmring::bridge")
  else()
    list(APPEND lines "  bridge    off: ${_shmring_bridge_why}")
  endif()
  foreach(part IN ITEMS TESTS BENCH TOOLS EXAMPLES GST PYTHON)
    string(TOLOWER ${part} name)
    set(option SHMRING_BUILD_${part})
    if(${option})
      set(state "yes")
    elseif(DEFINED _shmring_why_${option})
      set(state "${_shmring_why_${option}}")
    else()
      set(state "off (${option}=OFF)")
    endif()
    string(SUBSTRING "${name}         " 0 10 name)
    list(APPEND lines "  ${name}${state}")
  endforeach()
  if(SHMRING_SANITIZER)
    list(APPEND lines "  sanitizer ${SHMRING_SANITIZER}")
  endif()
  foreach(line IN LISTS lines)
    message(STATUS "${line}")
  endforeach()
endfunction()

# shmring_link_cli11(<target>): CLI11 for a command-line program, from its
# CMake package or, where Debian's libcli11-dev ships none, its headers.
function(shmring_link_cli11 target)
  if(TARGET CLI11::CLI11)
    target_link_libraries(${target} PRIVATE CLI11::CLI11)
  else()
    target_include_directories(${target} PRIVATE ${CLI11_INCLUDE_DIR})
  endif()
endfunction()
