# Helpers shared by every CMakeLists of the project.

# Warnings for project code (never for system headers).
add_library(weft_warnings INTERFACE)
target_compile_options(weft_warnings INTERFACE -Wall -Wextra -Wpedantic $<$<BOOL:${WEFT_WERROR}>:-Werror>)
# g++ 12 at -O3 (CMAKE_BUILD_TYPE=Release) reports -Wrestrict inside
# libstdc++'s char_traits for plain std::string appends (GCC bug 105329).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(weft_warnings INTERFACE -Wno-restrict)
endif()

# weft_add_library(NAME <target> ALIAS <ns::name> TYPE <SHARED|STATIC|OBJECT> SOURCES ...)
function(weft_add_library name)
  cmake_parse_arguments(ARG "" "ALIAS;TYPE" "SOURCES" ${ARGN})
  if(NOT ARG_TYPE)
    set(ARG_TYPE SHARED)
  endif()
  add_library(${name} ${ARG_TYPE} ${ARG_SOURCES})
  if(ARG_ALIAS)
    add_library(${ARG_ALIAS} ALIAS ${name})
  endif()
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_features(${name} PUBLIC cxx_std_20)
  target_link_libraries(${name} PRIVATE $<BUILD_INTERFACE:weft_warnings>)
endfunction()

# weft_add_program(<target> <sources...>): an executable of the project
# (test, example, tool). Exports its symbols so task names in errors are the
# functions' own names.
function(weft_add_program name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE weft::weft weft_warnings)
  set_target_properties(${name} PROPERTIES ENABLE_EXPORTS ON)
endfunction()
