# The session layer's demo: a grid game server whose player sessions move
# between hosts, and a bot client that checks every acknowledgement.
add_executable(baton-game-server ${CMAKE_SOURCE_DIR}/examples/baton-game-server.c)
target_link_libraries(baton-game-server PRIVATE baton_session)
add_executable(baton-game-client ${CMAKE_SOURCE_DIR}/examples/baton-game-client.c)
target_link_libraries(baton-game-client PRIVATE baton_session)
install(TARGETS baton-game-server baton-game-client RUNTIME DESTINATION bin)
