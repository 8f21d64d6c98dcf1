// Command static is a small static Linux executable: the image tests that do not run the sensor package it
// instead of the 25 MB sensor, whose compression dominates their time (minutes under the race detector).
package main

import "fmt"

func main() { fmt.Println("static") }
