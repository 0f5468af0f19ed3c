module github.com/countymcc/mcc/gateway

go 1.26
