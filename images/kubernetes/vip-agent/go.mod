module kbuild.invalid/vip-agent

go 1.24
