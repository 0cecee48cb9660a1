# embed.cmake -- turns a Lua source into a C header (cmake -DIN= -DOUT= -DNAME= -P embed.cmake).
# The array is NUL-terminated; cairn_lua_NAME_len excludes the NUL.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" nhex)
math(EXPR len "${nhex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n    " bytes "${bytes}")
get_filename_component(src "${IN}" NAME)
file(WRITE "${OUT}.tmp"
"/* Generated from lua/${src} by scripts/embed.cmake; do not edit. */\n"
"static const char cairn_lua_${NAME}[] = {\n    ${bytes}0x00};\n"
"static const size_t cairn_lua_${NAME}_len = ${len};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
