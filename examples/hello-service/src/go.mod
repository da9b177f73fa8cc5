module kbuild.example/hello-service

go 1.22
