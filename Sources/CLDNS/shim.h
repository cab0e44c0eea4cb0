#include <ldns/ldns.h>
#include <stdio.h>
#include <stdlib.h>
