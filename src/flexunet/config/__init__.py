"""The config dialect: parsed once, validated into frozen settings; its colours and the folders it names as inputs."""
